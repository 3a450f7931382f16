"""`lcfast analyze` / lcfast.pipeline.analyze and the markdown report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lcfast.errors import DataError, UsageError
from lcfast.pipeline.analyze import analyze, correlate, run_analysis
from lcfast.pipeline.report import write_report

from helpers import run_main


def _ref(name: str) -> Path:
    """The paper's table `name`, as packaged in lcfast.reference (a clone carries its own copy)."""
    from lcfast.reference import table_path

    p = table_path(name)
    assert p.is_file(), f"packaged reference table missing: {p}"
    return p


def _measure_csv(path: Path, seed: int = 0) -> pd.DataFrame:
    """A table shaped like `lcfast measure` output: 4 models × 3 checkpoints."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (layers, width) in enumerate([(1, 32), (1, 64), (2, 64), (2, 128)]):
        n_params = 1000 * width * (layers + 4)
        for ep in (1, 2, 3):
            cdnv = 0.5 * math.exp(-0.4 * ep - 0.3 * i) * math.exp(rng.normal(0, 0.05))
            rows.append({
                "model": f"L{layers}xW{width}", "checkpoint": f"epoch-{ep}", "n_params": n_params,
                "layers": layers, "width": width, "epochs": ep, "seed": 0,
                "val_loss": 3.0 + 0.8 * math.log(cdnv) / 2 + rng.normal(0, 0.01),
                "val_acc": 0.2 + 0.05 * ep, "perplexity": 0.0,
                "n_classes": 500, "n_samples": 10_000, "degenerate_pairs": 0,
                "nc1_cdnv": cdnv,
                "nc2_interference_mean": -0.002 + rng.normal(0, 1e-4),  # negative -> linear scale
                "gnc2_log_var": 0.05 + rng.uniform(0, 0.01),
                "nc1_pinv": float("nan"),  # no covariance pass: null column
                "nc4_agreement": 0.3 + 0.1 * ep,
            })
    df = pd.DataFrame(rows)
    df["perplexity"] = np.exp(df["val_loss"])
    df.to_csv(path, index=False)
    return df


# ---------------------------------------------------------------------------------------------
# The paper's own tables
# ---------------------------------------------------------------------------------------------


def test_paper_table_10_24_r2():
    corr = analyze([_ref("lc-2024_10_24.csv")], target="val_loss", plots=False).set_index("metric")
    cdnv, kern = corr.loc["cdnv"], corr.loc["gnc2_log_var"]
    assert cdnv["scale"] == "log" and kern["scale"] == "log"
    # the paper's cdnv (‖Δμ‖⁴) keeps its name: it is not the canonical nc1_cdnv (‖Δμ‖²)
    assert "nc1_cdnv" not in corr.index
    assert cdnv["source_column"] == "cdnv" and kern["source_column"] == "log_kern_var"
    assert cdnv["r2"] == pytest.approx(0.916, abs=0.005)
    assert kern["r2"] == pytest.approx(0.898, abs=0.005)
    assert cdnv["n"] == 230 and cdnv["slope"] > 0 and cdnv["spearman_rho"] > 0.9
    assert cdnv["p_value"] < 1e-50
    # Cross-check against a direct fit on the raw paper columns.
    raw = pd.read_csv(_ref("lc-2024_10_24.csv"))
    direct = stats.linregress(np.log(raw["cdnv"]), raw["val_loss"])
    assert cdnv["r2"] == pytest.approx(direct.rvalue**2, rel=1e-12)
    assert cdnv["slope"] == pytest.approx(direct.slope, rel=1e-12)
    # hits/misses -> the paper's NC4 hit rate (nearest of all C means): not the canonical
    # nc4_agreement (nearest kept mean); the paper's hits column is not analysed on its own.
    agree = corr.loc["hit_rate"]
    assert agree["source_column"] == "hits/(hits+misses)" and "nc4_agreement" not in corr.index
    assert agree["spearman_rho"] < -0.9  # more agreement, lower loss
    assert "hits" not in corr.index and "misses" not in corr.index
    # Same quantity -> canonical key; other definitions keep their names (docs/metrics.md).
    assert corr.loc["nc2_etf_error", "source_column"] == "etf_error"
    assert corr.loc["nc3_dual_error", "source_column"] == "dual_error"
    assert corr.loc["nc2_norm_mean", "source_column"] == "norms_mean"
    assert "interfere_var" in corr.index and "nc2_interference_var" not in corr.index
    assert "simcos_var" in corr.index and "nc3_dual_cos_var" not in corr.index  # ddof 1 vs 0
    assert list(corr["r2"].dropna()) == sorted(corr["r2"].dropna(), reverse=True)


def test_paper_table_05_18_maps_and_parses_ids():
    res = run_analysis([_ref("lc-2024_05_18.csv")], plots=False)
    corr = res.correlations.set_index("metric")
    assert corr.loc["cdnv", "source_column"] == "cdnv_mean"
    assert corr.loc["cdnv", "r2"] == pytest.approx(0.916, abs=0.005)
    assert "simcos_var" in corr.index and "sims_std" not in res.data.columns
    # 05_18's interference is of cosines (the canonical key); its norms are of ‖m_c‖² (tagged)
    assert corr.loc["nc2_interference_mean", "source_column"] == "interfere_mean"
    assert "norms_mean[05_18]" in corr.index and "nc2_norm_mean" not in corr.index
    assert corr.loc["match_rate", "source_column"] == "matches/(matches+misses)"
    row = res.data.set_index(["model", "checkpoint"]).loc[("01x0064_10L", 9)]
    assert (row["layers"], row["width"], row["epochs"], row["epoch"]) == (1, 64, 10, 10)
    assert "Unnamed: 0" not in res.data.columns  # the index column of the 05_18 file


def test_two_paper_tables_merge_and_keep_conflicting_columns_apart():
    res = run_analysis([_ref("lc-2024_05_18.csv"), _ref("lc-2024_10_24.csv")], plots=False)
    assert len(res.data) == 230
    cols = set(res.data.columns)
    # Same name, different definitions in the two tables -> kept apart by name.
    assert {"norms_mean[05_18]", "nc2_norm_mean"} <= cols and "norms_mean" not in cols
    assert {"nc2_interference_mean", "interfere_mean"} <= cols  # cosines (05_18) vs raw dots (10_24)
    # Same meaning (cdnv vs cdnv_mean, float32 round-off apart) -> one column, pooled.
    assert "cdnv" in cols and not any(c.startswith("cdnv[") for c in cols)
    assert set(res.pooled) == {"cdnv", "nc3_dual_cos_mean", "simcos_var"}
    assert any("interfere_mean" in a for a in res.kept_apart)
    assert any("merged" in n for n in res.notes)


# ---------------------------------------------------------------------------------------------
# Pooling like with like (own small tables in the paper's and lcfast's shapes)
# ---------------------------------------------------------------------------------------------


def _paper_like(path: Path, n: int = 6, seed: int = 1) -> pd.DataFrame:
    """A table with the paper's lc-2024_10_24 columns and model ids."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cdnv = 0.3 * math.exp(-0.3 * i)
        rows.append({
            "model": f"0{1 + i % 2}x0{64 * (1 + i)}_01L@0", "n_params": 10_000 * (i + 1),
            "val_acc": 0.3 + 0.01 * i, "val_loss": 3.0 + 0.4 * math.log(cdnv) + rng.normal(0, 0.01),
            "perplex": 20.0 - i, "cdnv": cdnv, "norms_mean": 7.0 + i, "norms_var": 3.0 + 0.1 * i,
            "etf_error": 1.4 - 0.01 * i, "interfere_mean": -0.002 - 1e-4 * i, "interfere_var": 400.0 + i,
            "log_kern_mean": -0.28, "log_kern_var": 0.09 - 0.005 * i, "dual_error": 1.41 - 0.01 * i,
            "simdot_mean": 0.7, "simdot_var": 2.9, "simcos_mean": 0.13 + 0.01 * i, "simcos_var": 0.09,
            "dists_mean": 1.28, "dists_var": 0.08, "hits": 1000 + 100 * i, "misses": 9000 - 100 * i,
            "norms_log_mean": 2.0, "norms_log_var": 0.07,
        })
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df


def test_pooling_paper_table_with_paper_profile_and_canonical_rows(tmp_path):
    paper = tmp_path / "paper.csv"
    _paper_like(paper)
    # a `lcfast measure --profile paper` table: the paper's column names, profile=paper, power 2
    prof = tmp_path / "profile_paper.csv"
    pp = _paper_like(tmp_path / "tmp.csv", n=3, seed=2).drop(columns=["perplex"])
    pp["model"] = ["mine", "mine", "other"]
    pp["checkpoint"] = ["epoch_1", "epoch_2", "epoch_1"]
    pp["profile"], pp["cdnv_power"], pp["n_classes"], pp["perplexity"] = "paper", 2.0, 300, 9.0
    pp.to_csv(prof, index=False)
    # lcfast canonical tables: one at power 1, one at power 2 (its nc1_cdnv is the paper's cdnv)
    p1, p2 = tmp_path / "canon_p1.csv", tmp_path / "canon_p2.csv"
    _measure_csv(p1)
    c2 = _measure_csv(p2, seed=3)
    c2["model"] = "P2" + c2["model"]
    c2["cdnv_power"] = 2.0
    c2["nc2_etf_error"] = 1.3
    c2.to_csv(p2, index=False)
    out = tmp_path / "an"
    res = run_analysis([paper, prof, p1, p2], out_dir=out, plots=False)
    d = res.data
    # cdnv: the paper table, the paper-profile rows and the power-2 canonical rows, nothing else
    assert res.pooled["cdnv"] == ["canon_p2.csv", "paper.csv", "profile_paper.csv"]
    assert d["cdnv"].notna().sum() == 6 + 3 + len(c2)
    assert set(d.loc[d["nc1_cdnv"].notna(), "source"]) == {"canon_p1.csv"}
    assert d.loc[d["source"] == "canon_p2.csv", "cdnv"].tolist() == pytest.approx(c2["nc1_cdnv"].tolist())
    # same quantity under the canonical key, from every table that has it
    assert res.pooled["nc2_etf_error"] == ["canon_p2.csv", "paper.csv", "profile_paper.csv"]
    assert res.pooled["gnc2_log_var"] == ["canon_p1.csv", "canon_p2.csv", "paper.csv", "profile_paper.csv"]
    # the paper's NC4 (all C means) and the canonical one (kept means) stay apart
    assert "hit_rate" in res.pooled and "nc4_agreement" in res.pooled
    assert set(d.loc[d["hit_rate"].notna(), "source"]) == {"paper.csv", "profile_paper.csv"}
    assert any(a.startswith("nc1_cdnv ≠ cdnv") for a in res.kept_apart)
    assert any(a.startswith("nc4_agreement ≠ hit_rate") for a in res.kept_apart)
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["pooled_columns"]["cdnv"] == res.pooled["cdnv"] and summary["kept_apart"] == res.kept_apart
    # the CLI says it in one line; the markdown report too
    code, _, err = run_main(["analyze", str(paper), str(prof), "--out", str(tmp_path / "cli"), "--no-plots"])
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("pooled across tables:")]
    assert len(lines) == 1 and "cdnv" in lines[0] and "paper.csv + profile_paper.csv" in lines[0]
    corr = analyze([paper, p2], plots=False)
    text = write_report(tmp_path / "rep", None, corr, [], []).read_text()
    assert "Pooled across tables: " in text and "docs/metrics.md" in text


def test_one_table_reports_no_pooling(tmp_path):
    paper = tmp_path / "paper.csv"
    _paper_like(paper)
    res = run_analysis([paper], plots=False)
    assert res.pooled == {} and res.kept_apart == []
    assert "cdnv" in res.correlations["metric"].tolist()


# ---------------------------------------------------------------------------------------------
# lcfast's own measure CSVs
# ---------------------------------------------------------------------------------------------


def test_own_csv_fits_plots_and_files(tmp_path):
    csv = tmp_path / "measure.csv"
    df = _measure_csv(csv)
    out = tmp_path / "an"
    corr = analyze([csv], target="val_loss", out_dir=out)
    by = corr.set_index("metric")
    # Metrics only: no meta/outcome/bookkeeping columns, no all-null column.
    assert set(by.index) == {"nc1_cdnv", "nc2_interference_mean", "gnc2_log_var", "nc4_agreement"}
    # Log scale only where positive everywhere; numbers equal a direct scipy fit.
    assert by.loc["nc1_cdnv", "scale"] == "log" and by.loc["nc2_interference_mean", "scale"] == "linear"
    lr = stats.linregress(np.log(df["nc1_cdnv"]), df["val_loss"])
    assert by.loc["nc1_cdnv", "r2"] == pytest.approx(lr.rvalue**2, rel=1e-12)
    assert by.loc["nc1_cdnv", "slope"] == pytest.approx(lr.slope, rel=1e-12)
    assert by.loc["nc1_cdnv", "intercept"] == pytest.approx(lr.intercept, rel=1e-12)
    assert by.loc["nc1_cdnv", "slope"] == pytest.approx(0.4, abs=0.05)
    lin = stats.linregress(df["nc2_interference_mean"], df["val_loss"])
    assert by.loc["nc2_interference_mean", "r2"] == pytest.approx(lin.rvalue**2, rel=1e-12)
    sp = stats.spearmanr(df["gnc2_log_var"], df["val_loss"])
    assert by.loc["gnc2_log_var", "spearman_rho"] == pytest.approx(sp.statistic, rel=1e-12)
    assert by.loc["gnc2_log_var", "p_value"] == pytest.approx(sp.pvalue, rel=1e-9)
    assert (by["n"] == 12).all()
    assert corr["metric"].iloc[0] == "nc1_cdnv"  # the strongest relation first

    written = pd.read_csv(out / "correlations.csv")
    for c in ("metric", "scale", "r2", "slope", "intercept", "spearman_rho", "p_value", "n"):
        assert c in written.columns
    assert list(written["metric"]) == list(corr["metric"])
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["target"] == "val_loss" and summary["n_rows"] == 12
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "scatter_nc1_cdnv_vs_val_loss.png" in pngs
    # Three checkpoints per model ("epoch-1".."epoch-3" / epochs) -> metric-vs-epoch plots.
    assert "epochs_nc1_cdnv.png" in pngs and "epochs_val_loss.png" in pngs
    for p in out.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(Path(p).name for p in corr.attrs["plots"]) == pngs


def test_single_checkpoint_per_model_has_no_epoch_plots(tmp_path):
    csv = tmp_path / "m.csv"
    df = _measure_csv(csv)
    df[df["epochs"] == 3].to_csv(csv, index=False)
    out = tmp_path / "an"
    analyze([csv], out_dir=out, metrics=["nc1_cdnv"])
    names = [p.name for p in out.glob("*.png")]
    assert names == ["scatter_nc1_cdnv_vs_val_loss.png"]


def test_epoch_plots_draw_tracked_curves_with_the_exact_points(tmp_path, monkeypatch):
    """A row whose collection lies in RUN/collect/<checkpoint> of a run with RUN/nc_track.csv: its
    epoch plot has the tracked curve (then one exact checkpoint per model is enough); rows without
    one (another model, a missing file) keep the plain behaviour."""
    from lcfast.pipeline.analyze import plots as an
    from lcfast.pipeline.track import TRACK_COLUMNS

    csv = tmp_path / "m.csv"
    df = _measure_csv(csv)
    df = df[df["epochs"] == 3].copy()  # the last checkpoint only, as `lcfast demo --quick` collects
    df["collect_dir"] = [str(tmp_path / "runs" / m / "collect" / "epoch_3") for m in df["model"]]
    df.to_csv(csv, index=False)
    tracked = ["L1xW32", "L2xW64"]
    for m in tracked:
        run = tmp_path / "runs" / m
        run.mkdir(parents=True)
        steps = range(2, 13, 2)
        t = pd.DataFrame([{c: None for c in TRACK_COLUMNS} | {"step": s, "epoch": s / 4, "nc1_cdnv": 1.0 / s,
                                                              "nc4_agreement": 0.5 if s % 4 == 0 else None}
                          for s in steps])
        t.to_csv(run / "nc_track.csv", index=False)
    (tmp_path / "runs" / "L2xW128").mkdir(parents=True)  # a run without tracking
    found = an.tracked_tables(df)
    assert sorted(found) == tracked and list(found["L1xW32"]["epoch"]) == [0.5, 1, 1.5, 2, 2.5, 3]
    drawn = []
    real = an._epoch_plot
    monkeypatch.setattr(an, "_epoch_plot", lambda *a, **k: drawn.append((a[2], sorted(a[6] or {}))) or real(*a, **k))
    out = tmp_path / "an"
    corr = analyze([csv], out_dir=out, metrics=["nc1_cdnv", "nc4_agreement"])
    names = sorted(p.name for p in out.glob("epochs_*.png"))
    assert names == ["epochs_nc1_cdnv.png", "epochs_nc4_agreement.png"]  # none without tracking: see below
    assert ("nc1_cdnv", tracked) in drawn
    assert any("tracked curves from the nc_track.csv of 2 run(s)" in n for n in corr.attrs["notes"])
    for p in out.glob("epochs_*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # without the files: no epoch plots for single checkpoints (as before)
    for m in tracked:
        (tmp_path / "runs" / m / "nc_track.csv").unlink()
    out2 = tmp_path / "an2"
    analyze([csv], out_dir=out2, metrics=["nc1_cdnv"])
    assert not list(out2.glob("epochs_*.png"))


def test_correlate_edge_cases():
    assert correlate([1, 2], [3, 4])["note"].startswith("only 2")
    r = correlate([1, 1, 1, 1], [1, 2, 3, 4])
    assert r["note"] == "constant" and math.isnan(r["r2"])
    r = correlate([1, 2, float("nan"), 4, 8], [1, 2, 3, 4, 5])
    assert r["n"] == 4 and r["scale"] == "log"
    r = correlate([0.0, 1, 2, 3], [0, 1, 2, 3])
    assert r["scale"] == "linear" and r["r2"] == pytest.approx(1.0)


def test_other_target(tmp_path):
    csv = tmp_path / "m.csv"
    _measure_csv(csv)
    corr = analyze([csv], target="val_acc", plots=False)
    assert corr.attrs["target"] == "val_acc"
    assert "val_loss" not in set(corr["metric"])  # outcomes are never metrics
    row = corr.set_index("metric").loc["nc4_agreement"]
    assert row["spearman_rho"] == pytest.approx(1.0)  # both rise with the epoch, ties aside
    assert row["scale"] == "log" and 0.99 < row["r2"] < 1.0  # ln is not linear: R² just below 1


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        analyze([tmp_path / "missing.csv"], plots=False)
    csv = tmp_path / "m.csv"
    _measure_csv(csv)
    with pytest.raises(UsageError, match=r"--target 'loss'.*val_loss"):
        analyze([csv], target="loss", plots=False)
    small = tmp_path / "small.csv"
    pd.read_csv(csv).head(2).to_csv(small, index=False)
    with pytest.raises(DataError, match="at least 3"):
        analyze([small], plots=False)
    nometric = tmp_path / "nometric.csv"
    pd.read_csv(csv)[["model", "checkpoint", "n_params", "val_loss"]].to_csv(nometric, index=False)
    with pytest.raises(DataError, match="no numeric metric columns"):
        analyze([nometric], plots=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        analyze([empty], plots=False)
    with pytest.raises(UsageError, match="--metric nope"):
        analyze([csv], metrics=["nope"], plots=False)


def test_cli(tmp_path):
    csv = tmp_path / "m.csv"
    _measure_csv(csv)
    out = tmp_path / "o"
    code, stdout, err = run_main(["analyze", str(csv), "--out", str(out), "--no-plots", "--json"])
    assert code == 0, err
    rows = json.loads(stdout)
    assert rows[0]["metric"] == "nc1_cdnv" and (out / "correlations.csv").is_file()
    code, stdout, _ = run_main(["analyze", str(csv), "--out", str(out), "--no-plots"])
    assert code == 0 and "nc1_cdnv" in stdout and "R²" in stdout

    code, _, err = run_main(["analyze", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert code == 1 and "nope.csv" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_main(["analyze", str(csv), "--target", "bogus", "--out", str(out)])
    assert code == 2 and "--target" in err and "val_loss" in err
    small = tmp_path / "small.csv"
    pd.read_csv(csv).head(2).to_csv(small, index=False)
    code, _, err = run_main(["analyze", str(small), "--out", str(out)])
    assert code == 1 and "small.csv" in err


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def test_write_report(tmp_path):
    csv = tmp_path / "measure.csv"
    _measure_csv(csv)
    out = tmp_path / "run"
    corr = analyze([csv], out_dir=out, metrics=["nc1_cdnv", "gnc2_log_var"])
    path = write_report(out, csv, corr, corr.attrs["plots"], ["demo sweep is tiny; trends only"])
    assert path == out / "report.md"
    text = path.read_text()
    assert "## Models" in text and "L2xW128" in text and "| model |" in text
    assert "## Correlation with `val_loss`" in text and "nc1_cdnv" in text
    # Plot links are relative to the report and point at real files.
    links = [line[line.index("](") + 2 : -1] for line in text.splitlines() if line.startswith("![")]
    assert links and all(not Path(link).is_absolute() and (out / link).is_file() for link in links)
    assert "- demo sweep is tiny; trends only" in text
    # Without measurements or plots it still writes a valid report.
    p2 = write_report(tmp_path / "r2", None, corr, [], [])
    assert "## Models" not in p2.read_text() and "nc1_cdnv" in p2.read_text()


def test_packaged_paper_table_by_name(tmp_path):
    """`paper:NAME` reads the copy shipped in lcfast/reference (no file outside the package needed); a bad
    name is a usage error."""
    code, out, err = run_main(["analyze", "paper:lc-2024_10_24", "--out", str(tmp_path / "o"), "--no-plots", "--json"])
    assert code == 0, err
    rows = {r["metric"]: r for r in json.loads(out)}
    assert rows["cdnv"]["n"] == 230  # the paper's cdnv (power 2) keeps its own name
    code, out, err = run_main(["analyze", "paper:lc-1999", "--out", str(tmp_path / "p")])
    assert code == 2 and "paper:lc-1999" in err and "lc-2024_10_24" in err
