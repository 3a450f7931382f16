"""The entry points: `run_analysis` (load → check the target and metrics → correlate → write
correlations.csv, data.csv, analysis.json and the plots, all published together) and `analyze`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lcfast.errors import DataError, UsageError
from lcfast.pipeline.analyze.fit import correlate
from lcfast.pipeline.analyze.load import (
    depth_data,
    head_rows,
    load_tables,
    metric_columns,
    pooling,
)
from lcfast.pipeline.analyze.plots import (
    make_depth_plots,
    make_plots,
    remove_stale_plots,
)
from lcfast.pipeline.analyze.result import (
    CORRELATION_COLUMNS,
    CORRELATIONS_FILE,
    DATA_FILE,
    DEFAULT_TARGET,
    SUMMARY_FILE,
    AnalysisResult,
)


def run_analysis(
    csv_paths,
    target: str = DEFAULT_TARGET,
    out_dir=None,
    metrics: list[str] | None = None,
    plots: bool = True,
) -> AnalysisResult:
    """Load, correlate, and (with `out_dir`) write CSV/JSON/PNG outputs; see the module docstring."""
    notes: list[str] = []
    paths = [Path(p) for p in ([csv_paths] if isinstance(csv_paths, (str, Path)) else csv_paths)]
    data, renamed, derived = load_tables(paths, notes)
    names = ", ".join(str(p) for p in paths)
    depth = depth_data(data)
    if depth is not None:
        n_layer_rows = int((~head_rows(data)).sum())
        if n_layer_rows:
            notes.append(f"{n_layer_rows} hidden-layer rows (collect --layers) are plotted against depth, "
                         "not correlated")
        data = data[head_rows(data)].reset_index(drop=True)
    pooled, apart = pooling(data) if len(paths) > 1 else ({}, [])

    if target not in data.columns:
        numeric = [c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])]
        raise UsageError(
            f"--target {target!r}: no such column in {names} "
            f"(numeric columns: {', '.join(map(str, numeric)) or 'none'})"
        )
    y = pd.to_numeric(data[target], errors="coerce")
    if y.isna().all():
        raise DataError(f"{names}: target column {target!r} has no numeric values")
    n_bad = int((~np.isfinite(y.to_numpy(dtype=np.float64))).sum())
    if n_bad:
        notes.append(f"{n_bad} rows without a finite {target} were left out")
        data = data[np.isfinite(y.to_numpy(dtype=np.float64))].reset_index(drop=True)
    if len(data) < 3:
        if depth is not None and out_dir is not None:  # one or two models through depth: plots, no correlation
            return _depth_only(depth, target, paths, data, renamed, derived, notes, Path(out_dir), plots, metrics)
        raise DataError(f"{names}: {len(data)} rows with a finite {target}; a correlation needs at least 3")

    available = metric_columns(data, target)
    if metrics:
        unknown = [m for m in metrics if m not in data.columns]
        if unknown:
            raise UsageError(
                f"--metric {', '.join(unknown)}: no such column in {names} "
                f"(metric columns: {', '.join(available) or 'none'})"
            )
        non_numeric = [m for m in metrics if not pd.api.types.is_numeric_dtype(data[m])]
        if non_numeric:
            raise UsageError(f"--metric {', '.join(non_numeric)}: not a numeric column in {names}")
        chosen = list(dict.fromkeys(metrics))
    else:
        chosen = available
    if not chosen:
        raise DataError(
            f"{names}: no numeric metric columns to correlate with {target} "
            f"(columns: {', '.join(str(c) for c in data.columns if c != 'source')})"
        )

    reverse: dict[str, str] = {}
    for mp in renamed.values():
        for src, dst in mp.items():
            if src not in reverse.get(dst, "").split("/"):
                reverse[dst] = f"{reverse[dst]}/{src}" if dst in reverse else src
    for d in derived:
        lhs, _, rhs = d.split(": ", 1)[-1].partition(" = ")
        if rhs and lhs in data.columns and lhs not in reverse:
            reverse[lhs] = rhs
    rows = []
    for m in chosen:
        r = correlate(pd.to_numeric(data[m], errors="coerce"), data[target])
        rows.append({"metric": m, **r, "source_column": reverse.get(m, m)})
    corr = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    corr = corr.sort_values("r2", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    skipped = corr[corr["r2"].isna()]
    if len(skipped):
        notes.append(
            "no fit for: " + ", ".join(f"{m} ({n})" for m, n in zip(skipped["metric"], skipped["note"]))
        )
    corr.attrs["target"] = target

    res = AnalysisResult(
        correlations=corr, data=data, target=target, inputs=[str(p) for p in paths], metrics=chosen,
        renamed=renamed, derived=derived, notes=notes, pooled=pooled, kept_apart=apart,
    )
    if out_dir is not None:
        out = Path(out_dir)
        ours = _check_out(out, paths)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"--out {out}: cannot write ({e.strerror or e})") from e
        # all outputs are published together once complete; an error or interrupt leaves the old ones
        try:
            _write_outputs(res, out, plots, corr, data, target=target, chosen=chosen, renamed=renamed,
                           derived=derived, notes=notes, ours=ours, depth=depth)
        except OSError as e:
            raise DataError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return res


def _check_out(out: Path, paths: list[Path]) -> bool:
    """Refuse an --out that would overwrite an input or a user's files; True when an earlier analysis
    wrote `out` (its outputs may then be replaced)."""
    from lcfast.io import refuse_overwriting_inputs

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    refuse_overwriting_inputs([out / CORRELATIONS_FILE, out / DATA_FILE, out / SUMMARY_FILE], paths, "--out")
    ours = (out / SUMMARY_FILE).is_file()
    theirs = [n for n in (CORRELATIONS_FILE, DATA_FILE) if (out / n).exists()]
    if theirs and not ours:
        raise UsageError(f"--out {out}: holds {' and '.join(theirs)} that no lcfast analysis wrote "
                         f"(no {SUMMARY_FILE}); choose another --out")
    return ours


def _depth_only(depth, target, paths, data, renamed, derived, notes, out: Path, plots: bool, metrics) -> AnalysisResult:
    """Fewer than 3 models: no correlation, but each metric against depth (and the same files)."""
    chosen = list(dict.fromkeys(metrics)) if metrics else metric_columns(depth, target)
    notes.append(f"{len(data)} model row(s) with a finite {target}: no correlation (it needs at least 3); "
                 "depth plots only")
    corr = pd.DataFrame([], columns=CORRELATION_COLUMNS)
    res = AnalysisResult(correlations=corr, data=depth.drop(columns=["_line"]), target=target,
                         inputs=[str(p) for p in paths], metrics=chosen, renamed=renamed, derived=derived, notes=notes)
    ours = _check_out(out, paths)
    try:
        out.mkdir(parents=True, exist_ok=True)
        _write_outputs(res, out, plots, corr, res.data, target=target, chosen=chosen, renamed=renamed,
                       derived=derived, notes=notes, ours=ours, depth=depth, scatter=False)
    except OSError as e:
        raise DataError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return res


def _write_outputs(res, out, plots, corr, data, *, target, chosen, renamed, derived, notes, ours: bool,
                   depth=None, scatter: bool = True) -> None:
    """Stage every output of `run_analysis` and publish them together; then drop the stale plots of
    the earlier analysis in `out` (`ours`: there was one)."""
    from lcfast.io import staged
    from lcfast.pipeline.analyze import per_class as pcv

    view, pc_path = pcv.load_view(res.inputs, data) if scatter else (None, None)
    from lcfast.pipeline.analyze import convergence as cv

    conv = cv.load_convergence(res.inputs)
    if conv is not None:
        res.convergence = cv.convergence_summary(conv)
    with staged() as st:
        if plots:
            res.plots = make_plots(res, out, st) if scatter else []
            if depth is not None:
                res.plots += make_depth_plots(depth, [m for m in chosen if m in depth.columns], out, st)
            if conv is not None:
                res.plots += cv.convergence_plots(conv, out, st)
        if view is not None:
            res.per_class, res.per_class_view = pcv.view_summary(view, pc_path, out), view
            st.write_text(out / pcv.CORR_FILE, view["correlations"].to_csv(index=False))
            st.write_text(out / pcv.BINS_FILE, view["bins"].to_csv(index=False))
            res.files.update(per_class_correlations=str(out / pcv.CORR_FILE), per_class_bins=str(out / pcv.BINS_FILE))
            if plots:
                p = out / pcv.PLOT_FILE
                if pcv.plot_view(view, st.path(p)):
                    res.plots.append(p)
                else:
                    st.forget(p)
        st.write_text(out / CORRELATIONS_FILE, corr.to_csv(index=False))
        st.write_text(out / DATA_FILE, data.to_csv(index=False))
        res.files.update({
            "correlations": str(out / CORRELATIONS_FILE),
            "data": str(out / DATA_FILE),
            "summary": str(out / SUMMARY_FILE),
        })
        summary = {
            "target": target,
            "inputs": res.inputs,
            "n_rows": int(len(data)),
            "metrics": chosen,
            "fit": "target = slope * t(metric) + intercept; t = ln where the metric is > 0 on every row, else identity",
            "renamed_columns": renamed,
            "derived_columns": derived,
            "pooled_columns": res.pooled,
            "kept_apart": res.kept_apart,
            "plots": [str(p.relative_to(out)) for p in res.plots],
            "notes": notes,
            "correlations": json.loads(corr.to_json(orient="records")),
            "per_class": res.per_class,
            "convergence": res.convergence,
        }
        st.write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    if plots and ours:
        remove_stale_plots(out, res.plots)


def analyze(
    csv_paths,
    target: str = DEFAULT_TARGET,
    out_dir=None,
    metrics: list[str] | None = None,
    plots: bool = True,
) -> pd.DataFrame:
    """Correlation of each metric with `target`, sorted by R² (columns: `CORRELATION_COLUMNS`).

    With `out_dir`, also writes correlations.csv, data.csv, analysis.json and the PNG plots.
    `.attrs` of the returned frame carries target, plots, notes, renamed and derived columns.
    """
    res = run_analysis(csv_paths, target=target, out_dir=out_dir, metrics=metrics, plots=plots)
    df = res.correlations
    df.attrs.update(
        target=res.target, plots=[str(p) for p in res.plots], notes=list(res.notes),
        renamed=res.renamed, derived=list(res.derived), pooled=dict(res.pooled), kept_apart=list(res.kept_apart),
    )
    return df
