"""per_class.parquet and lcfast.per_class on the controlled corpus: exact joins (every class once,
counts equal the shard's), and the relation of variability with context entropy has the right sign
and moves the right way over training.

The training test is deterministic (CPU, fixed seed 0, one thread) and takes a few seconds; on that
seed the margins are wide (deterministic targets' nearest-class CDNV falls ~6× from epoch 1 to 3,
the ambiguous ones' does not fall; ρ over the targets ≈ 0.8), so it fails only when the relation does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

import lcfast
from lcfast.data.shards import TokenShard
from lcfast.data.synth import ControlledCorpus
from lcfast.metrics.per_class import context_entropy, label_counts
from lcfast.pipeline.collect import CollectOptions, collect
from lcfast.pipeline.measure import measure
from lcfast.pipeline.train import train_run

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 3


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    root = tmp_path_factory.mktemp("per_class")
    cc = ControlledCorpus(deterministic=0.2, ambiguous=0.2)
    cc.write(root / "data", 20_000, seed=0)
    train_run(root / "data", root / "run", layers=1, width=16, heads=2, context=16, epochs=EPOCHS, batch_size=8,
              lr=1e-2, seed=0, device="cpu", steps_per_epoch=20, eval_tokens=2048, progress=False, window_size=8)
    collect(root / "run", checkpoint="all", opts=CollectOptions(batch_size=64, device="cpu"), progress=False)
    measure([root / "run"], root / "m", progress=False, context_orders=2)
    df = pd.read_parquet(root / "m" / "per_class.parquet")
    kind = {int(i): k for k, ids in cc.ids.items() for i in ids}
    df["kind"] = df["id"].map(kind)
    return {"root": root, "cc": cc, "df": df}


def test_every_class_once_counts_equal_the_shard(controlled):
    root, df = controlled["root"], controlled["df"]
    shard = TokenShard(root / "data" / "train.lcshard")
    toks = np.asarray(shard.tokens)
    sc = label_counts(toks, shard.vocab_size)
    h, _ = context_entropy(toks, 2, shard.vocab_size)
    meas = pd.read_csv(root / "m" / "measurements.csv")
    assert sorted(df["checkpoint"].unique()) == [f"epoch_{e}" for e in range(1, EPOCHS + 1)]
    for ck, g in df.groupby("checkpoint"):
        assert g["id"].is_unique and list(g["id"]) == sorted(g["id"])
        assert set(g["id"]) == set(np.flatnonzero(sc))  # no class lost, none invented
        assert int(g["shard_count"].sum()) == shard.n_tokens - 1 == int(sc.sum())
        np.testing.assert_array_equal(g["shard_count"], sc[g["id"]])
        np.testing.assert_array_equal(g["ctx_entropy_1"], h[0, g["id"]])
        np.testing.assert_array_equal(g["ctx_entropy_2"], h[1, g["id"]])
        row = meas[meas["checkpoint"] == ck].iloc[0]
        tok = pd.read_parquet(root / "m" / row["per_token"])
        kept = g[g["kept"]]
        assert len(kept) == len(tok) == row["n_classes"] and int(kept["n"].sum()) == row["n_samples"]
        # the whole shard was collected: the collected counts are the shard's
        np.testing.assert_array_equal(kept["n"], kept["shard_count"])
        j = kept.merge(tok, on="id", suffixes=("", "_t"))
        for c in ("var", "cdnv_nearest", "nc4_hit_rate", "nearest"):
            np.testing.assert_array_equal(j[c].to_numpy(dtype=float), j[f"{c}_t"].to_numpy(dtype=float))
        # var_rel weighted by n is the measurement's nc1_trace_ratio (Tr Σ_W / Tr Σ_B)
        ratio = float((kept["n"] * kept["var_rel"]).sum() / kept["n"].sum())
        assert ratio == pytest.approx(row["nc1_trace_ratio"], rel=1e-9)
    # by construction: deterministic targets 0 bits, ambiguous ones ≈ log2(8) = 3 bits
    t = df[df["checkpoint"] == "epoch_1"].set_index("kind")
    assert (t.loc["det_target", "ctx_entropy_1"] == 0).all()
    assert t.loc["amb_target", "ctx_entropy_1"].between(2.9, 3.0).all()


def test_api_equals_the_parquet(controlled):
    root, df = controlled["root"], controlled["df"]
    api = lcfast.per_class(root / "run" / "collect" / "epoch_2", orders=2)
    ref = df[df["checkpoint"] == "epoch_2"].drop(columns=["kind"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(api, ref)


def test_relation_sign_and_training(controlled):
    df = controlled["df"]
    targets = df[df["kind"].isin(["det_target", "amb_target"])]
    last = targets[targets["checkpoint"] == f"epoch_{EPOCHS}"]
    rho, p = spearmanr(last["ctx_entropy_1"], last["cdnv_nearest"])
    assert rho > 0.5 and p < 1e-3  # ambiguous classes stay more variable than deterministic ones
    med = targets.groupby(["kind", "checkpoint"])["cdnv_nearest"].median()
    fall = {k: med[k, f"epoch_{EPOCHS}"] / med[k, "epoch_1"] for k in ("det_target", "amb_target")}
    assert fall["det_target"] < 0.5 * fall["amb_target"]  # deterministic classes collapse faster
    assert fall["det_target"] < 0.5


def test_analyze_per_class_view(controlled, tmp_path):
    from lcfast.pipeline.analyze import per_class as pcv
    from lcfast.pipeline.analyze import run_analysis

    root, df = controlled["root"], controlled["df"]
    res = run_analysis([root / "m" / "measurements.csv"], out_dir=tmp_path / "a")
    corr = pd.read_csv(tmp_path / "a" / pcv.CORR_FILE)
    bins = pd.read_csv(tmp_path / "a" / pcv.BINS_FILE)
    assert len(corr) == EPOCHS * 2 * len(pcv.VARIABILITY)  # checkpoints × orders × variabilities
    kept = df[df["kept"]]
    for ck, g in kept.groupby("checkpoint"):
        # binned counts: every kept class with an entropy in exactly one bin
        assert int(bins.loc[bins["checkpoint"] == ck, "classes"].sum()) == int(g["ctx_entropy_1"].notna().sum())
        rho, p = spearmanr(g["ctx_entropy_1"], g["cdnv_nearest"], nan_policy="omit")
        r = corr[(corr["checkpoint"] == ck) & (corr["order"] == 1) & (corr["variability"] == "cdnv_nearest")].iloc[0]
        assert r["spearman_rho"] == pytest.approx(rho) and r["p_value"] == pytest.approx(p)
    assert (tmp_path / "a" / pcv.PLOT_FILE) in res.plots and (tmp_path / "a" / pcv.PLOT_FILE).is_file()
    summary = __import__("json").loads((tmp_path / "a" / "analysis.json").read_text())
    assert summary["per_class"]["lines"] == res.per_class["lines"]
    (t,) = res.per_class["training"]  # one architecture, three epochs
    assert t["epochs"] == [1.0, 2.0, 3.0] and len(t["rho"]) == 3
    assert any("ρ" in line for line in res.per_class["lines"])


def test_view_says_when_there_is_nothing():
    from lcfast.pipeline.analyze.per_class import per_class_view

    rng = np.random.default_rng(0)
    rows = []
    for m, n_params in (("a", 100), ("b", 200), ("c", 400)):
        for i in range(200):  # variability independent of the entropy
            rows.append({"model": m, "checkpoint": "epoch_1", "epochs": 1, "n_params": n_params, "id": i, "kept": True,
                         "ctx_entropy_1": rng.uniform(0, 6), "cdnv_nearest": rng.lognormal(), "var_rel": rng.random()})
    view = per_class_view(pd.DataFrame(rows))
    assert any("show no relation" in line for line in view["lines"]), view["lines"]
    assert view["size"] is not None and view["size"]["n"] == 3
    # and a clear relation is said as one
    for r in rows:
        r["cdnv_nearest"] = r["ctx_entropy_1"] + 0.01 * rng.random()
    view = per_class_view(pd.DataFrame(rows))
    assert any("In every model" in line for line in view["lines"]), view["lines"]


def test_shard_gone_measure_stands_with_a_note(tmp_path):
    """The per-class rows need the train shard; without it the measurement is still written, and says why."""
    cc = ControlledCorpus()
    cc.write(tmp_path / "data", 3000, seed=1)
    train_run(tmp_path / "data", tmp_path / "run", layers=1, width=8, heads=2, context=8, epochs=1, batch_size=4,
              seed=0, device="cpu", steps_per_epoch=2, eval_tokens=256, progress=False, window_size=8)
    collect(tmp_path / "run", checkpoint="all", opts=CollectOptions(batch_size=64, device="cpu"), progress=False)
    (tmp_path / "data" / "train.lcshard").rename(tmp_path / "elsewhere.lcshard")
    df = measure([tmp_path / "run"], tmp_path / "m", progress=False)
    assert len(df) == 1 and (tmp_path / "m" / "measurements.csv").is_file()
    assert not (tmp_path / "m" / "per_class.parquet").exists()
    assert any("no per-class rows" in n and "train shard is gone" in n for n in df.attrs["notes"])
    with pytest.raises(lcfast.DataError, match="train shard is gone"):
        lcfast.per_class(tmp_path / "run")
    # --context-orders 0: no per-class table at all, and no note
    df = measure([tmp_path / "run"], tmp_path / "m0", progress=False, context_orders=0)
    assert not (tmp_path / "m0" / "per_class.parquet").exists()
    assert not any("per-class" in n for n in df.attrs["notes"])
    # an earlier measurement's table is not left beside new measurements it does not describe
    (tmp_path / "elsewhere.lcshard").rename(tmp_path / "data" / "train.lcshard")
    measure([tmp_path / "run"], tmp_path / "m0", progress=False)
    assert (tmp_path / "m0" / "per_class.parquet").is_file()
    df = measure([tmp_path / "run"], tmp_path / "m0", progress=False, context_orders=0)
    assert not (tmp_path / "m0" / "per_class.parquet").exists()
    assert any("removed" in n and "per_class.parquet" in n for n in df.attrs["notes"])


def test_too_big_for_memory_is_a_note(controlled, tmp_path, monkeypatch):
    monkeypatch.setenv("LCFAST_MEMORY_AVAILABLE", "1000")
    df = measure([controlled["root"] / "run" / "collect" / "epoch_1"], tmp_path / "m", progress=False)
    assert not (tmp_path / "m" / "per_class.parquet").exists()
    assert any("needs about" in n and "--context-orders 0" in n for n in df.attrs["notes"])


def test_corpus_controlled_cli(tmp_path):
    from helpers import cli

    code, err = cli(["corpus", "controlled", "--out", str(tmp_path / "c"), "--tokens", "5000", "--seed", "2"])
    assert code == 0, err
    meta = __import__("json").loads((tmp_path / "c" / "controlled.json").read_text())
    train, val = TokenShard(tmp_path / "c" / "train.lcshard"), TokenShard(tmp_path / "c" / "val.lcshard")
    assert train.n_tokens + val.n_tokens == 5000 == meta["n_tokens"] and meta["train_tokens"] == train.n_tokens
    s = np.concatenate([np.asarray(train.tokens), np.asarray(val.tokens)])
    assert np.array_equal(s, ControlledCorpus().tokens(5000, seed=2))  # the defaults of the API
    code, err = cli(["corpus", "controlled", "--out", str(tmp_path / "d"), "--deterministic", "0.3",
                     "--ambiguous", "0.3"])
    assert code == 2 and "at most 0.5 together" in err and not (tmp_path / "d").exists()
