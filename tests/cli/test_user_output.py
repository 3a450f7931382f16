"""What a user reads (issue 15): terminal tables never cut a value at 80–100 columns, progress bars
fit 80 columns, help shows upper-case names and no Python types, doctor says how to install a
missing optional, p-values are never "0", plots have readable ticks, labelled lines and integer
epochs."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import LCFAST


def _console(width: int):
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=False, color_system=None)


def _printed(con) -> str:
    return con.file.getvalue()


# -- tables -------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [60, 80, 100])
def test_print_table_never_cuts_a_value(width):
    from lcfast.tables import print_table

    heads = ["model", "checkpoint", "n_params", "val_loss"] + [f"nc_metric_number_{i}" for i in range(6)]
    rows = [[f"L{i}_W1024_E10_S0", f"epoch_{i}", f"{123456789 * i:,}", f"{0.000864 * i:.6f}"]
            + [f"{1.234567e-5 * (j + 1) * (i + 1):.6e}" for j in range(6)] for i in range(1, 5)]
    con = _console(width)
    print_table(con, "a wide table", heads, rows, keys=2)
    out = _printed(con)
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= width
    for r in rows:
        for cell in r:
            assert cell in out  # every value whole, on one line
    for h in heads:
        assert h in out


def test_one_record_is_printed_on_its_side():
    from lcfast.tables import print_table

    heads = ["epoch", "step", "n_params", "train_loss", "val_loss", "val_acc", "perplexity", "tokens_per_s"]
    row = ["2", "4,000", "23,296", "3.6337", "3.5497", "0.1663", "34.8018", "12,345"]
    con = _console(60)
    print_table(con, "run (done)", heads, [row])
    lines = _printed(con).splitlines()
    assert "…" not in _printed(con) and max(map(len, lines)) <= 60
    for h, v in zip(heads, row):
        assert any(h in ln and v in ln for ln in lines)  # one line per field


def test_measure_table_at_80_columns():
    from lcfast.pipeline.measure import print_measure_table

    df = pd.DataFrame({"model": ["L1_W32_E1_S0", "L2_W128_E3_S0"], "checkpoint": ["epoch_1", "epoch_3"],
                       "n_params": [80256, 666368], "val_loss": [4.743, 1.383], "nc1_cdnv": [4.244, 1.403],
                       "nc2_norm_cov": [0.37, 0.13], "nc2_interference_mean": [0.000864, -9.2e-05],
                       "gnc2_log_var": [0.26, 0.21], "nc3_dual_cos_mean": [0.21, 0.61], "nc4_agreement": [0.069, 0.64]})
    con = _console(80)
    print_measure_table(df, con)
    out = _printed(con)
    assert "…" not in out and max(map(len, out.splitlines())) <= 80
    assert "8.640e-04" in out and "L2_W128_E3_S0" in out and "666,368" in out


def test_bench_table_at_80_columns():
    from lcfast.benchmarks import print_bench_table

    def row(impl, t, sp=None, err=None, kind=None, thr=None, unit="GB/s", note=""):
        return {"family": "class_stats", "case": "uniform labels", "impl": impl, "time_s": t, "speedup": sp,
                "err": err, "err_kind": kind, "throughput": thr, "unit": unit, "frac_peak": None, "note": note,
                "extra": {"is_reference": err is None}}

    rep = {"device": "NVIDIA H200", "device_kind": "cuda", "sizes_preset": "paper",
           "rows": [row("naive: one-hot matmul (f64)", 4.64),
                    row("torch: index_put scatter", 0.0301, 154.2, 1.8e-16, "rel", 1.1),
                    row("triton: segmented", 0.000123, 37723.6, 2.2e-16, "rel", 2345.6),
                    row("triton: atomic", 0.000456, 10175.4, 2.2e-16, "rel", 632.1, note="atomics contend on Zipf")]}
    con = _console(80)
    print_bench_table(rep, con)
    out = _printed(con)
    assert "…" not in out and max(map(len, out.splitlines())) <= 80
    for s in ("37723.6×", "2345.6 GB/s", "triton: segmented", "triton: atomic", "123 µs",
              "naive = one-hot matmul (f64)"):
        assert s in out


# -- progress -------------------------------------------------------------------------------------


def test_progress_bar_fits_80_columns():
    from lcfast.progress import progress_bar

    con = _console(80)
    bar = progress_bar(unit="steps", fields=("loss", "tps"), console=con)
    t = bar.add_task("epoch 10/10", total=12000, loss="loss 12.3456", tps="123,456 tok/s")
    bar.update(t, completed=4321)
    con.print(bar.make_tasks_table(bar.tasks))
    line = _printed(con).rstrip("\n")
    assert "\n" not in line and len(line) <= 80 and "4,321/12,000 steps" in line
    ev = bar.add_task("eval", total=50, loss="", tps="", unit="windows")
    assert "0/50 windows" in "".join(str(c.render(bar.tasks[ev])) for c in bar.columns if hasattr(c, "render"))


# -- help and doctor ------------------------------------------------------------------------------


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
@pytest.mark.parametrize("cmd", [[], ["tokenize"], ["count"], ["train"], ["collect"], ["measure"], ["analyze"],
                                 ["bench"], ["demo"], ["doctor"], ["export"], ["merge"], ["corpus", "synth"],
                                 ["corpus", "controlled"]])
def test_help_names_and_types(cmd):
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}
    p = subprocess.run([str(LCFAST), *cmd, "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "<bool>" not in out and "list[" not in out and not re.search(r"<(int|float|str|path|text)>", out)
    usage = next(ln for ln in out.splitlines() if "Usage:" in ln)
    for arg in re.findall(r"[{\[]([A-Za-z_.]+)[}\]]", usage):
        assert arg == "OPTIONS" or arg.isupper(), usage  # one convention: upper-case argument names
    assert "{" not in usage and "}" not in usage, usage  # click's convention: MODEL, [MODEL], MODEL... (not {MODEL})


@pytest.mark.skipif(not LCFAST.is_file(), reason=f"console script {LCFAST} not installed")
def test_doctor_says_how_to_install_a_missing_optional(tmp_path):
    code = ("import sys; sys.modules['datasets'] = None; sys.modules['transformers'] = None\n"
            "from lcfast.cli.app import main; main(['doctor', '--json'])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr  # optional: not a failure
    import json

    rep = json.loads(p.stdout)
    for mod in ("datasets", "transformers"):
        assert rep[mod].startswith("missing") and "pip install 'lcfast[hf]'" in rep[mod]


# -- p-values ---------------------------------------------------------------------------------------


def test_format_p_is_never_zero():
    import math

    from lcfast.pipeline.analyze import format_p

    assert format_p(0.0, rho=1.0, n=12) == format(2 / math.factorial(12), ".2g")  # exact permutation p
    assert format_p(0.0, rho=-1.0, n=4) == "0.083"
    assert format_p(0.0, rho=0.99, n=300) == "< 1e-300"  # an underflow
    assert format_p(0.0) == "< 1e-300" and format_p(float("nan")) == "—" and format_p(0.0123) == "0.012"


def test_report_glossary_p_and_plot_sections(tmp_path):
    from lcfast.pipeline.report import write_report

    corr = pd.DataFrame({"metric": ["nc1_cdnv", "unc3"], "scale": ["log", "log"], "r2": [0.86, 0.97],
                         "slope": [3.5, 2.2], "spearman_rho": [1.0, 0.937], "p_value": [0.0, 7e-6], "n": [12, 12]})
    corr.attrs["target"] = "val_loss"
    for name in ("scatter_nc1_cdnv_vs_val_loss.png", "epochs_nc1_cdnv.png"):
        (tmp_path / name).write_bytes(b"png")
    text = write_report(tmp_path, None, corr, [tmp_path / "scatter_nc1_cdnv_vs_val_loss.png",
                                               tmp_path / "epochs_nc1_cdnv.png"], [],
                        plots_note="Why these plots.").read_text()
    assert "| 0 |" not in text and "4.18e-09" in text and "2/n!" in text
    assert "## Glossary" in text and "`nc1_cdnv`" in text and "smaller (↓ 0)" in text and "docs/metrics.md" in text
    assert "Why these plots." in text and "### Over training" in text and "`val_loss` against `nc1_cdnv`" in text


# -- plots ------------------------------------------------------------------------------------------


def test_log_axis_ticks_are_plain_and_few():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from lcfast.pipeline.analyze.plots import _readable_log_axis

    for lo, hi in [(1.346, 1.399), (0.2148, 0.3519), (0.045, 0.59), (1.4, 4.24), (1.5e-4, 0.21), (8e4, 6.7e5)]:
        fig, ax = plt.subplots()
        ax.set_xscale("log")
        ax.plot([lo, hi], [0, 1])
        _readable_log_axis(ax.xaxis, lo, hi)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()
                  and lo * 0.9 <= t.get_position()[0] <= hi * 1.1]
        minor = [t.get_text() for t in ax.xaxis.get_minorticklabels() if t.get_text()]
        plt.close(fig)
        assert 2 <= len(labels) <= 6 and not minor, (lo, hi, labels, minor)
        assert not any("times" in s or "^" in s for s in labels), labels


def test_over_training_plot_labels_models_and_integer_epochs(tmp_path, monkeypatch):
    from lcfast.pipeline.analyze import plots as an
    from lcfast.pipeline.analyze import run_analysis

    seen = {}

    def keep(fig, path):
        ax = fig.axes[0]
        seen[Path(path).name] = {
            "legend": [t.get_text() for lg in [*fig.legends, ax.get_legend()] if lg for t in lg.get_texts()],
            "xticks": [float(x) for x in ax.get_xticks() if ax.get_xlim()[0] <= x <= ax.get_xlim()[1]],
            "title": ax.get_title(), "n_axes": len(fig.axes),
        }
        fig.savefig(path, format="png")

    monkeypatch.setattr(an, "_save_fig", keep)
    rows = [{"model": "L2_W128_E3_S0", "n_params": 666368, "epochs": 3, "epoch": e, "val_loss": 3.0 - e / 2,
             "nc1_cdnv": 2.4 - e / 3} for e in (1, 2, 3)]
    rows += [{"model": m, "n_params": p, "epochs": 1, "epoch": 1, "val_loss": v, "nc1_cdnv": c}
             for m, p, v, c in (("a", 8e4, 4.7, 4.2), ("b", 1.8e5, 3.4, 3.1))]
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    res = run_analysis([csv], out_dir=tmp_path / "out", metrics=["nc1_cdnv"], plots=False)
    an.make_plots(res, tmp_path / "out", kinds=("epochs",))
    (p,) = [v for k, v in seen.items() if "epochs_nc1_cdnv" in k]  # (drawn into a staged temporary)
    assert p["legend"] == ["L2_W128_E3_S0 (666k parameters)"] and p["n_axes"] == 1  # no colour bar for one line
    assert p["xticks"] and all(x == int(x) for x in p["xticks"]) and "L2_W128_E3_S0" in p["title"]
    assert "1 models" not in p["title"]
    assert not list((tmp_path / "out").glob("scatter_*.png"))  # kinds: only what was asked for
