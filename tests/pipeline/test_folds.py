"""collect --folds K / --seed / --max-tokens (a seeded random sample of windows), and what measure
makes of them: standard errors, M_stable, convergence.csv.

The window plan is checked directly (pure in (seed, window index), parts that partition it, folds
balanced, a sample spread over the whole shard); collections on the tiny real pipeline check that K
folds measure the same point values as one (to float64 rounding), that a killed sampled collection
resumes to the same totals, that `--shard i/n` parts of a sample merge to the single-process
sample, and the CLI's refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lcfast.errors import UsageError
from lcfast.pipeline.collect import CollectOptions, collect

from helpers import Killed, assert_same_stats, console, kill_after, make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

OPTS = dict(batch_size=8, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("folds"))


def test_window_plan_is_pure_partitioned_and_uniform():
    from lcfast.model.features import WindowPlan

    a, b = WindowPlan(1000, 100, seed=7, folds=4), WindowPlan(1000, 100, seed=7, folds=4)
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.folds, b.folds)  # every rank computes the same
    assert len(a) == 100 and len(set(a.ids.tolist())) == 100  # no window twice
    assert np.all(np.diff(a.folds) >= 0)  # fold by fold (a batch updates one fold's block) …
    for f in range(4):
        assert np.all(np.diff(a.ids[a.folds == f]) > 0)  # … each in shard order
    assert a.ids.max() > 800 and a.ids.min() < 200  # over the whole shard, not its first windows
    assert np.bincount(a.folds).tolist() == [25, 25, 25, 25]  # balanced folds
    assert not np.array_equal(WindowPlan(1000, 100, seed=8).ids, a.ids)  # another seed, another sample
    for world in (1, 2, 3, 7):  # the parts' contiguous shares cover the plan once
        blocks = [a.block(r, world) for r in range(world)]
        assert [f for f, _ in blocks] == [0, *np.cumsum([c for _, c in blocks])[:-1].tolist()]
        assert sum(c for _, c in blocks) == 100
    full = WindowPlan(50, None, seed=3, folds=1)  # no sample, one fold: exactly today's windows
    assert full.ids.tolist() == list(range(50)) and not full.sampled and full.folds.sum() == 0
    counts = np.bincount(WindowPlan(10_000, 2_000, seed=1).ids // 1000, minlength=10)
    assert counts.min() > 150  # uniform over the shard (each tenth expects 200)


def test_windows_by_id_are_collects_windows(tiny):
    from lcfast.data.shards import TokenShard
    from lcfast.model.features import window_batch, windows_by_id

    sh = TokenShard(str(tiny["data"] / "train.lcshard"))
    n = sh.n_seq_windows(16)
    for want, got in zip(window_batch(sh, 16, 0, n), windows_by_id(sh, 16, np.arange(n))):
        assert torch.equal(want, got)  # the ragged last window too


def _measure(cdir, out):
    from lcfast.pipeline.measure import measure

    return measure([cdir], out, device="cpu", progress=False, context_orders=0).iloc[0]


def test_folds_sum_to_the_single_fold_totals(tiny, tmp_path):
    """K folds: the same point metrics as one fold (~1e-12), n_positions the same, SEs and
    M_stable filled, convergence.csv of nested subsamples halving down to one fold."""
    from lcfast.metrics.uncertainty import se_keys

    (s1,) = collect(tiny["run"], out=tmp_path / "k1", opts=CollectOptions(folds=1, **OPTS), progress=False)
    (s4,) = collect(tiny["run"], out=tmp_path / "k4", opts=CollectOptions(folds=4, seed=5, **OPTS), progress=False)
    assert s4["options"]["folds"] == 4 and s4["options"]["seed"] == 5
    assert s4["stats_bytes"] == 4 * s1["stats_bytes"]  # the memory estimate counts the folds
    r1, r4 = _measure(tmp_path / "k1", tmp_path / "m1"), _measure(tmp_path / "k4", tmp_path / "m4")
    assert r1["n_positions"] == r4["n_positions"] == s1["passes"]["train"]["tokens"]
    compared = 0
    for k in se_keys("canonical"):
        a, b = r1[k], r4[k]
        if isinstance(a, float) and np.isfinite(a):
            # the debiased CDNV divides by corrected distances that may be nearly 0 (tiny classes of a
            # 2-step model): float64 rounding of the merge is amplified there, not in the others
            assert b == pytest.approx(a, rel=1e-6 if k.endswith("_debiased") else 1e-10, abs=1e-12), k
            compared += 1
        assert pd.isna(r1[f"{k}_se"]) and pd.isna(r1[f"{k}_stable"])  # one fold: no SE, no verdict
    assert compared >= 8
    assert r4["nc1_cdnv_se"] > 0 and r4["nc4_agreement_se"] >= 0 and r4["nc1_cdnv_stable"] in (True, False)
    conv = pd.read_csv(tmp_path / "m4" / "convergence.csv")
    assert list(conv.columns) == ["model", "checkpoint", "layer", "metric", "n_positions", "value", "se"]
    cd = conv[conv.metric == "nc1_cdnv"].sort_values("n_positions")
    assert len(cd) == 3 and cd.n_positions.iloc[-1] == r4["n_positions"]  # 1, 2, 4 folds
    assert cd.value.iloc[-1] == pytest.approx(r4["nc1_cdnv"]) and pd.isna(cd.se.iloc[0])
    half = cd.value.iloc[1]
    assert bool(r4["nc1_cdnv_stable"]) == (abs(r4["nc1_cdnv"] - half) < 2 * r4["nc1_cdnv_se"])


def test_sampled_collection_resumes_and_parts_merge(tiny, tmp_path):
    """--max-tokens draws windows over the whole shard; a killed run resumes to the same totals;
    --shard parts of the same sample merge to the single-process sample (what torchrun ranks do)."""
    from lcfast.pipeline.collect import merge
    from lcfast.pipeline.collect.parts import Part

    opts = dict(max_tokens=1500, seed=11, folds=2, **OPTS)
    (ref,) = collect(tiny["run"], out=tmp_path / "ref", opts=CollectOptions(**opts), progress=False)
    w = ref["windows"]["train"]
    assert w["sampled"] and w["windows"] < w["of"] and 1500 <= ref["passes"]["train"]["tokens"] <= 1500 + 16
    with pytest.raises(Killed):
        collect(tiny["run"], out=tmp_path / "cut", opts=CollectOptions(save_every_windows=3, **opts),
                progress=False, on_save=kill_after("train", 2))
    collect(tiny["run"], out=tmp_path / "cut", opts=CollectOptions(save_every_windows=3, **opts), progress=False)
    assert_same_stats(tmp_path / "ref", tmp_path / "cut")
    parts = tmp_path / "parts"
    for _ in range(2):  # train pass, then (once merged) the val pass
        for i in range(3):
            collect(tiny["run"], out=parts, opts=CollectOptions(part=Part(i, 3), **opts), progress=False)
        merge(parts)
    collect(tiny["run"], out=parts, opts=CollectOptions(**opts), progress=False)
    assert_same_stats(tmp_path / "ref", parts)
    # another seed: another sample (and a state of the first is refused, not resumed)
    from lcfast.errors import DataError

    with pytest.raises(DataError, match="seed"):
        collect(tiny["run"], out=tmp_path / "ref", opts=CollectOptions(**{**opts, "seed": 12}), progress=False)


def test_features_max_tokens_is_a_seeded_sample(tiny):
    import lcfast

    model = lcfast.load_model(tiny["run"])
    shard = tiny["data"] / "train.lcshard"
    H1, Y1 = lcfast.features(model, shard, max_tokens=200, seed=1)
    H2, Y2 = lcfast.features(model, shard, max_tokens=200, seed=1)
    H3, Y3 = lcfast.features(model, shard, max_tokens=200, seed=2)
    assert torch.equal(Y1, Y2) and torch.equal(H1, H2)
    assert not torch.equal(Y1, Y3)
    Hf, Yf = lcfast.features(model, shard, max_tokens=200, seed=1, context=16)
    assert len(Yf) >= 200


def test_covariance_with_folds_is_refused():
    from lcfast.pipeline.collect import check_options

    with pytest.raises(UsageError, match="--folds 4: not with --covariance"):
        check_options(CollectOptions(covariance=True, folds=4))


@pytest.mark.parametrize("args, needle", [
    (["--folds", "0"], "--folds 0"), (["--folds", "65"], "--folds 65"), (["--seed", "-1"], "--seed -1"),
    (["--max-tokens", "0"], "--max-tokens 0"), (["--folds", "2", "--covariance"], "not with --covariance"),
])
def test_cli_refuses_bad_fold_values(tiny, tmp_path, args, needle):
    r = console(["collect", tiny["run"], "--out", tmp_path / "c", "--device", "cpu", "--no-progress", *args])
    code, err = r.returncode, r.stderr
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c").exists()


def test_cli_collect_defaults_to_eight_folds(tiny, tmp_path):
    r = console(["collect", tiny["run"], "--out", tmp_path / "c", "--device", "cpu", "--no-progress",
                 "--max-tokens", "600", "--json"])
    assert r.returncode == 0, r.stderr
    (s,) = json.loads(r.stdout)
    assert s["options"]["folds"] == 8 and s["options"]["seed"] == 0


def test_needed_positions_reads_doublings():
    from lcfast.pipeline.convergence import needed_positions

    rows = [  # a settles from 2,000 on; b moves by 5 SE at the last doubling; c has no SE
        *({"metric": "a", "n_positions": n, "value": v, "se": 0.1} for n, v in
          ((1000, 1.0), (2000, 2.0), (4000, 2.05), (8000, 2.1))),
        *({"metric": "b", "n_positions": n, "value": v, "se": 0.1} for n, v in ((1000, 1.0), (2000, 1.5))),
        {"metric": "c", "n_positions": 10, "value": 1.0, "se": None},
        {"metric": "c", "n_positions": 20, "value": 1.0, "se": None},
    ]
    got = needed_positions(rows)
    assert got["a"] == {"n_max": 8000, "stable": True, "needs": 2000}
    assert got["b"] == {"n_max": 2000, "stable": False, "needs": None}
    assert got["c"]["stable"] is None and got["c"]["needs"] is None


def test_report_and_analysis_read_the_convergence(tiny, tmp_path):
    """The report's Precision section, analyze's convergence plots and summary; the precision
    columns are not correlated as metrics."""
    from lcfast.pipeline.analyze import metric_columns
    from lcfast.pipeline.analyze.convergence import convergence_summary, load_convergence
    from lcfast.pipeline.report import write_report

    collect(tiny["run"], out=tmp_path / "k4", opts=CollectOptions(folds=4, **OPTS), progress=False)
    _measure(tmp_path / "k4", tmp_path / "m")
    csv = tmp_path / "m" / "measurements.csv"
    text = write_report(tmp_path / "rep", csv).read_text()
    assert "## Precision" in text and "| `nc1_cdnv` |" in text
    summary = {s["metric"]: s for s in convergence_summary(load_convergence([csv]))}
    assert summary["nc1_cdnv"]["rows"] == 1 and summary["nc1_cdnv"]["n_max"] > 5000
    data = pd.read_csv(csv)
    cols = metric_columns(data, "val_loss")
    assert "nc1_cdnv" in cols and not [c for c in cols if c.endswith(("_se", "_stable")) or c == "n_positions"]
    from lcfast.io import staged
    from lcfast.pipeline.analyze.convergence import convergence_plots

    with staged() as st:
        plots = convergence_plots(load_convergence([csv]), tmp_path / "rep", st)
    assert tmp_path / "rep" / "convergence_nc1_cdnv.png" in plots and plots[0].stat().st_size > 1000


def test_torchrun_collects_the_same_sample_and_folds(tiny, tmp_path):
    """Under torchrun (2 ranks) --max-tokens is no longer refused: every rank computes the same seeded
    sample and takes its share, and the summed folds equal the single-process collection."""
    import subprocess

    from helpers import torchrun

    args = ["--device", "cpu", "--no-progress", "--batch-size", "8", "--max-tokens", "1500", "--folds", "2",
            "--seed", "11", "--json"]
    try:
        r = torchrun(["collect", tiny["run"], "--out", tmp_path / "dist", *args], timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("torchrun collect timed out")
    assert r.returncode == 0, r.stderr[-3000:]
    collect(tiny["run"], out=tmp_path / "single", opts=CollectOptions(max_tokens=1500, folds=2, seed=11, **OPTS),
            progress=False)
    assert_same_stats(tmp_path / "single", tmp_path / "dist")
    assert json.loads((tmp_path / "dist" / "collect.json").read_text())["world_size"] == 2


def test_memory_counts_the_folds_and_the_default_steps_down():
    """An explicit --folds K that does not fit is refused naming K and what fits; without --folds the
    largest of 8, 4, 2, 1 that fits is taken."""
    from lcfast.pipeline.collect import layers as cl
    from lcfast.pipeline.collect.run import _fit_folds

    layout = cl.SlotLayout(slots=["head"], n_classes=1000, dims=[64])
    one = cl.stats_bytes(1, 1000, 64)
    cpu = torch.device("cpu")
    with pytest.raises(UsageError, match=r"--folds 8: the class statistics of 8 folds need .*use --folds 3 or fewer"):
        cl.check_memory(layout, exact=False, covariance=False, device=cpu, budget=3 * one + 1, layers_flag=None,
                        folds=8)
    assert cl.check_memory(layout, exact=False, covariance=False, device=cpu, budget=8 * one, layers_flag=None,
                           folds=8) == 8 * one
    k, need = _fit_folds(layout, CollectOptions(folds=None, max_memory=3 * one + 1), cpu)
    assert (k, need) == (2, 2 * one)
    with pytest.raises(UsageError, match="--folds 8"):
        _fit_folds(layout, CollectOptions(folds=8, max_memory=3 * one + 1), cpu)
    assert _fit_folds(layout, CollectOptions(folds=None, covariance=True), cpu)[0] == 1


def test_folds_with_exact_layers_and_classes(tiny, tmp_path):
    """--exact (the second pass about each fold's own means), --layers and --classes top:K with folds
    measure what one fold measures: every row, every metric (to float64 rounding)."""
    from lcfast.metrics.uncertainty import se_keys

    rows = {}
    for k in (1, 3):
        out = tmp_path / f"k{k}"
        collect(tiny["run"], out=out, opts=CollectOptions(folds=k, exact=True, layers="all", classes="top:40",
                                                          max_tokens=2000, **OPTS), progress=False)
        from lcfast.pipeline.measure import measure

        rows[k] = measure([out], tmp_path / f"m{k}", device="cpu", progress=False, context_orders=0)
    a, b = rows[1], rows[3]
    assert len(a) == len(b) >= 2 and a["layer"].tolist() == b["layer"].tolist()
    compared = 0
    for k in se_keys("canonical"):
        for x, y in zip(a[k], b[k]):
            if isinstance(x, float) and np.isfinite(x):
                assert y == pytest.approx(x, rel=1e-6 if k.endswith("_debiased") else 1e-9, abs=1e-12), k
                compared += 1
    assert compared >= 20
    assert b["nc1_cdnv_se"].notna().all() and a["nc1_cdnv_se"].isna().all()
    conv = pd.read_csv(tmp_path / "m3" / "convergence.csv")
    assert set(conv["layer"].dropna().astype(int)) >= set(b["layer"].dropna().astype(int))
