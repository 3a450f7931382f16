"""A short markdown report of a sweep: models and metrics, correlations with the target, plots, notes.

`write_report(out_dir, measurements_csv, correlations_df, plots, notes) -> Path` writes
`out_dir/report.md`. Plot links are relative to `out_dir` where possible, so the folder can be
moved or browsed on GitHub as is.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path

import pandas as pd

from lcfast.errors import DataError
from lcfast.io import atomic_write_text

REPORT_FILE = "report.md"

# Columns of the models table, in this order, when present.
_MODEL_COLUMNS = ["model", "checkpoint", "n_params", "layers", "width", "epochs", "epoch", "seed",
                  "val_loss", "val_acc", "perplexity"]
_METRIC_COLUMNS = ["nc1_cdnv", "nc1_trace_ratio", "nc2_norm_cov", "nc2_interference_var", "nc2_etf_error",
                   "gnc2_log_var", "nc3_dual_cos_mean", "unc3", "nc3_dual_error", "nc4_agreement"]
MAX_MODEL_ROWS = 60


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (int,)) and not isinstance(v, bool) and abs(v) >= 10_000:
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `df` (no index)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v.item() if hasattr(v, "item") else v) for v in row) + " |")
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()
    except ValueError:  # other drive on Windows
        return Path(path).as_posix()


def write_report(
    out_dir,
    measurements_csv=None,
    correlations_df: pd.DataFrame | None = None,
    plots=(),
    notes=(),
    target: str | None = None,
    title: str = "lcfast report",
) -> Path:
    """Write `out_dir/report.md` and return its path.

    measurements_csv: a table of one row per model/checkpoint (read like `lcfast analyze` reads it,
    so the paper's tables work too), or None. correlations_df: the frame `analyze` returned, or None.
    plots: PNG paths. notes: strings, written verbatim as a list (say what is approximate or missing).
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{out}: cannot create report folder ({e.strerror or e})") from e
    if target is None and correlations_df is not None:
        target = correlations_df.attrs.get("target")
    target = target or "val_loss"

    parts = [f"# {title}", "", f"Generated {_dt.datetime.now().isoformat(timespec='seconds')}."]

    if measurements_csv is not None:
        from lcfast.pipeline.analyze import load_tables

        data, _, derived = load_tables([measurements_csv])
        cols = [c for c in _MODEL_COLUMNS if c in data.columns]
        mcols = [c for c in _METRIC_COLUMNS if c in data.columns and data[c].notna().any()]
        table = data[cols + mcols]
        sort = [c for c in ("n_params", "model", "epoch", "checkpoint") if c in table.columns]
        if sort:
            table = table.sort_values(sort, kind="stable")
        parts += ["", "## Models", "",
                  f"{len(data)} rows from `{Path(measurements_csv).name}`"
                  + (f" (showing the first {MAX_MODEL_ROWS})" if len(data) > MAX_MODEL_ROWS else "") + ".",
                  "", markdown_table(table.head(MAX_MODEL_ROWS))]
        if derived:
            parts += ["", "Derived columns: " + "; ".join(derived) + "."]

    if correlations_df is not None and len(correlations_df):
        c = correlations_df
        show = [k for k in ("metric", "scale", "r2", "slope", "spearman_rho", "p_value", "n") if k in c.columns]
        parts += ["", f"## Correlation with `{target}`", "",
                  f"Linear fit of {target} against each metric — against ln(metric) where `scale` is `log` "
                  "(the metric is positive on every row) — with R², slope, Spearman ρ and its p-value; "
                  "sorted by R².", "", markdown_table(c[show])]
        if c.attrs.get("pooled") or c.attrs.get("kept_apart"):
            from lcfast.pipeline.analyze import pooling_line

            line = pooling_line(c.attrs.get("pooled") or {}, c.attrs.get("kept_apart") or [])
            parts += ["", line[0].upper() + line[1:] + " (definitions: docs/metrics.md)."]

    plots = [Path(p) for p in plots or ()]
    if plots:
        parts += ["", "## Plots", ""]
        for p in plots:
            parts.append(f"![{p.stem}]({_rel(p, out)})")
            parts.append("")

    notes = [str(n) for n in notes or ()]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {' '.join(n.split())}" for n in notes]

    path = out / REPORT_FILE
    atomic_write_text(path, "\n".join(parts).rstrip() + "\n")
    return path
