"""lcfast measure: one CSV row per (model, checkpoint), equal to measure_embeddings on the raw
features; per-token parquet with decoded tokens; --min-count / --cdnv-power; CLI errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from lcfast.errors import DataError, UsageError
from lcfast.pipeline.collect import CollectOptions, collect
from lcfast.pipeline.measure import ID_COLUMNS, measure

from helpers import Killed, cli, features_of, kill_after, make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

OPTS = dict(batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    t = make_tiny(tmp_path_factory.mktemp("measure"))
    collect(t["run"], checkpoint="all", opts=CollectOptions(covariance=True, **OPTS), progress=False)
    return t


def test_rows_match_measure_embeddings(tiny, tmp_path):
    import lcfast
    from lcfast.data.shards import TokenShard
    from lcfast.metrics.measure import CANONICAL_KEYS
    from lcfast.model.checkpoint import load_run

    df = measure([tiny["run"]], tmp_path / "m", progress=False)
    csv = pd.read_csv(tmp_path / "m" / "measurements.csv")
    assert list(csv.columns[: len(ID_COLUMNS)]) == ID_COLUMNS
    assert set(CANONICAL_KEYS) <= set(csv.columns)
    assert list(csv["checkpoint"]) == ["epoch_1", "epoch_2"] and list(csv["epochs"]) == [1, 2]
    hist = [json.loads(line) for line in (tiny["run"] / "metrics.jsonl").read_text().splitlines()]
    for (_, row), rec in zip(csv.iterrows(), hist):
        assert row["val_loss"] == pytest.approx(rec["val_loss"]) and row["val_acc"] == pytest.approx(rec["val_acc"])
        assert row["perplexity"] == pytest.approx(rec["perplexity"])
    # the same numbers as measure_embeddings on the raw features of the whole shards
    model, cfg = load_run(tiny["run"], 2)
    T = cfg["model"]["context"]
    H, Y = features_of(model, TokenShard(str(tiny["data"] / "train.lcshard")), T)
    Hv, Yv = features_of(model, TokenShard(str(tiny["data"] / "val.lcshard")), T)
    ref = lcfast.measure_embeddings(H, Y, W=model.lm_head_weight.detach(), H_val=Hv, Y_val=Yv, backend="torch")
    row = df[df["checkpoint"] == "epoch_2"].iloc[0]
    assert row["n_params"] == model.n_params() and row["layers"] == 1 and row["width"] == 16 and row["seed"] == 0
    for k in CANONICAL_KEYS:
        if ref[k] is None:
            assert row[k] is None or (isinstance(row[k], float) and math.isnan(row[k])), k
        else:
            assert row[k] == pytest.approx(ref[k], rel=1e-6, abs=1e-9), k
    assert 0 < row["nc4_agreement"] <= 1 and row["nc1_pinv"] > 0  # collected with --covariance
    # per-token parquet: kept classes, decoded strings from tokenizer.json
    from tokenizers import Tokenizer

    tab = pd.read_parquet(tmp_path / "m" / "per_token" / "run_epoch_2.parquet")
    tok = Tokenizer.from_file(str(tiny["data"] / "tokenizer.json"))
    assert len(tab) == row["n_classes"] and int(tab["n"].sum()) == row["n_samples"]
    for i, s in zip(tab["id"][:20], tab["token"][:20]):
        assert s == tok.decode([int(i)], skip_special_tokens=False)  # the EOS token shows as itself
    assert tab["token"].str.len().gt(0).mean() > 0.9


def test_min_count_cdnv_power_and_exact(tiny, tmp_path):
    base = measure([tiny["run"] / "collect" / "epoch_2"], tmp_path / "a", progress=False).iloc[0]
    p2 = measure([tiny["run"] / "collect" / "epoch_2"], tmp_path / "b", cdnv_power=2.0, progress=False).iloc[0]
    assert p2["nc1_cdnv"] != pytest.approx(base["nc1_cdnv"]) and p2["cdnv_power"] == 2.0
    assert p2["nc2_norm_mean"] == pytest.approx(base["nc2_norm_mean"])
    # NC4 decisions depend on the kept classes: another --min-count leaves nc4 empty, with a note
    df = measure([tiny["run"] / "collect" / "epoch_2"], tmp_path / "c", min_count=3, progress=False)
    r = df.iloc[0]
    assert r["n_classes"] < base["n_classes"] and r["nc4_agreement"] is None
    assert any("min-count" in n for n in df.attrs["notes"])
    # collected with --min-count 3: measure uses it by default and has NC4
    collect(tiny["run"], out=tmp_path / "mc3", opts=CollectOptions(min_count=3, **OPTS), progress=False)
    r3 = measure([tmp_path / "mc3"], tmp_path / "d", progress=False).iloc[0]
    assert r3["n_classes"] == r["n_classes"] and r3["nc4_agreement"] is not None
    # exact two-pass collection: the same metrics up to rounding
    collect(tiny["run"], out=tmp_path / "ex", opts=CollectOptions(exact=True, **OPTS), progress=False)
    ex = measure([tmp_path / "ex"], tmp_path / "e", progress=False).iloc[0]
    assert ex["exact"] and not base["exact"]
    for k in ("nc1_cdnv", "nc1_trace_ratio", "nc2_etf_error", "gnc2_log_var", "nc4_agreement"):
        assert ex[k] == pytest.approx(base[k], rel=1e-9), k


def test_profile_paper_rows_match_measure_embeddings(tiny, tmp_path):
    """`lcfast measure --profile paper`: the paper's columns, equal to measure_embeddings(profile="paper")
    on the raw features (NC4 over all C means, from the collected all-class decisions)."""
    import lcfast
    from lcfast.data.shards import TokenShard
    from lcfast.metrics.measure import CANONICAL_KEYS, PAPER_KEYS
    from lcfast.model.checkpoint import load_run

    code, _ = cli(["measure", tiny["run"] / "collect" / "epoch_2", "--out", tmp_path / "p", "--profile", "paper",
                   "--no-progress"])
    assert code == 0
    csv = pd.read_csv(tmp_path / "p" / "measurements.csv")
    assert set(PAPER_KEYS) <= set(csv.columns) and not set(CANONICAL_KEYS) - set(PAPER_KEYS) & set(csv.columns)
    row = csv.iloc[0]
    assert row["profile"] == "paper" and row["cdnv_power"] == 2
    model, cfg = load_run(tiny["run"], 2)
    T = cfg["model"]["context"]
    H, Y = features_of(model, TokenShard(str(tiny["data"] / "train.lcshard")), T)
    Hv, Yv = features_of(model, TokenShard(str(tiny["data"] / "val.lcshard")), T)
    ref = lcfast.measure_embeddings(H, Y, W=model.lm_head_weight.detach(), H_val=Hv, Y_val=Yv, backend="torch",
                                    profile="paper")
    for k in PAPER_KEYS:
        assert ref[k] is not None, k
        if k in ("hits", "misses", "n_classes", "n_samples", "degenerate_pairs"):
            assert int(row[k]) == ref[k], k
        else:
            assert row[k] == pytest.approx(ref[k], rel=1e-6, abs=1e-9), k
    canon = measure([tiny["run"] / "collect" / "epoch_2"], tmp_path / "c", progress=False).iloc[0]
    assert canon["profile"] == "canonical" and row["etf_error"] == pytest.approx(canon["nc2_etf_error"], rel=1e-12)


def test_measure_errors(tiny, tmp_path):
    code, err = cli(["measure", tmp_path / "nope", "--out", tmp_path / "o", "--no-progress"])
    assert code == 2 and "nope" in err and len(err.strip().splitlines()) == 1
    fresh = make_tiny(tiny["root"], epochs=1, name="fresh")
    code, err = cli(["measure", fresh["run"], "--out", tmp_path / "o", "--no-progress"])
    assert code == 1 and "lcfast collect" in err and len(err.strip().splitlines()) == 1
    code, err = cli(["measure", tiny["run"], "--out", tmp_path / "o", "--cdnv-power", "0", "--no-progress"])
    assert code == 2 and "--cdnv-power" in err
    # a collection restarted and interrupted is refused until it is finished
    collect(fresh["run"], opts=CollectOptions(**OPTS), progress=False)
    summary = (fresh["run"] / "collect" / "epoch_1" / "collect.json").read_text()
    with pytest.raises(Killed):
        collect(fresh["run"], opts=CollectOptions(save_every_windows=1, restart=True, **OPTS), progress=False,
                on_save=kill_after("train", 1))
    (fresh["run"] / "collect" / "epoch_1" / "collect.json").write_text(summary)
    code, err = cli(["measure", fresh["run"], "--out", tmp_path / "o", "--no-progress"])
    assert code == 1 and "incomplete" in err and "train_stats" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UsageError):
        measure([tiny["run"]], tmp_path / "o", min_count=0, progress=False)
    with pytest.raises(DataError, match="no collected checkpoint"):
        measure([tmp_path], tmp_path / "o", progress=False)
    # success through the CLI: CSV + parquet
    code, _ = cli(["measure", tiny["run"], "--out", tmp_path / "ok", "--no-progress"])
    assert code == 0 and len(pd.read_csv(tmp_path / "ok" / "measurements.csv")) == 2
    per_token = sorted(p.name for p in (tmp_path / "ok" / "per_token").iterdir())
    assert per_token == ["run_epoch_1.parquet", "run_epoch_2.parquet"]
