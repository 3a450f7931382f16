"""A short markdown report of a sweep: models and metrics, correlations with the target, plots, a
glossary of every column shown, notes.

`write_report(out_dir, measurements_csv, correlations_df, plots, notes) -> Path` writes
`out_dir/report.md`. When a convergence.csv (lcfast measure) lies beside the measurements, a
"Precision" section says per metric whether it is stable at the size measured and roughly how
many positions it needs. Plot links are relative to `out_dir` where possible, so the folder can be
moved or browsed on GitHub as is. The glossary's directions are those of docs/metrics.md.
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
                  "val_loss", "val_acc", "perplexity", "n_positions"]
_METRIC_COLUMNS = ["nc1_cdnv", "nc1_trace_ratio", "nc2_norm_cov", "nc2_interference_var", "nc2_etf_error",
                   "gnc2_log_var", "nc3_dual_cos_mean", "unc3", "nc3_dual_error", "nc4_agreement"]
MAX_MODEL_ROWS = 60

_DOWN, _UP = "smaller (↓ 0)", "larger (↑ 1)"
#: column → (what it measures, which way is more collapse); the formulas are in docs/metrics.md
GLOSSARY = {
    "model": ("the run's name: L layers, W width, E epochs of training, S seed", ""),
    "checkpoint": ("the epoch the row was measured at", ""),
    "n_params": ("parameters of the model", ""),
    "layers": ("transformer blocks", ""),
    "width": ("hidden size d (the features' dimension)", ""),
    "epochs": ("epochs the run was trained for", ""),
    "epoch": ("the epoch of the checkpoint", ""),
    "seed": ("seed of initialisation and batch order", ""),
    "val_loss": ("mean next-token cross-entropy on the validation shard (nats)", ""),
    "val_acc": ("share of validation tokens the model predicts exactly", ""),
    "perplexity": ("exp(val_loss)", ""),
    "n_positions": ("train positions the class statistics saw (the measurement's sample size)", ""),
    "nc1_cdnv": ("NC1, variability: within-class spread of the features over the squared distance between "
                 "class means, averaged over pairs of classes (CDNV)", _DOWN),
    "nc1_trace_ratio": ("NC1: total within-class over between-class variance, Tr Σ_W / Tr Σ_B", _DOWN),
    "nc1_pinv": ("NC1 (Papyan et al.): Tr(Σ_W Σ_B⁺)/C", _DOWN),
    "nc2_norm_mean": ("mean norm of the centred class means", "none (a scale)"),
    "nc2_norm_cov": ("NC2, equinorm: coefficient of variation of the class-mean norms", _DOWN),
    "nc2_lognorm_var": ("NC2, equinorm: variance of the log class-mean norms", _DOWN),
    "nc2_interference_mean": ("NC2, equiangularity: mean cosine between two centred class means",
                              "→ −1/(C−1) (a simplex)"),
    "nc2_interference_var": ("NC2, equiangularity: variance, over pairs of classes, of the cosine between two "
                             "centred class means", _DOWN),
    "nc2_etf_error": ("NC2: distance of the class means' normalised Gram matrix from a simplex ETF's", _DOWN),
    "gnc2_log_mean": ("GNC2, hyperspherical uniformity: mean log-kernel energy log(1/‖m̂_c − m̂_c′‖) of the "
                      "class-mean directions", "smaller (↓)"),
    "gnc2_log_var": ("GNC2, hyperspherical uniformity: variance, over pairs of classes, of the log-kernel energy "
                     "log(1/‖m̂_c − m̂_c′‖) of the class-mean directions", _DOWN),
    "nc3_dual_cos_mean": ("NC3, self-duality: mean cosine between a class's classifier row w_c and its centred "
                          "mean", _UP),
    "nc3_dual_cos_var": ("NC3, self-duality: variance, over classes, of the cosine between a class's classifier "
                         "row w_c and its centred mean", _DOWN),
    "unc3": ("UNC3, uniform duality: coefficient of variation, over classes, of the cosine between a class's "
             "classifier row w_c and its centred mean", _DOWN),
    "nc3_dual_error": ("NC3: distance of W Mᵀ (classifier rows × class means) from a simplex ETF", _DOWN),
    "nc4_agreement": ("NC4: share of validation positions where the nearest class mean names the token the "
                      "model predicts", _UP),
    "scale": ("log: the fit is on ln(metric) (the metric is positive on every row); linear: on the metric", ""),
    "R²": ("share of the target's variance the linear fit explains", ""),
    "slope": ("change of the target per unit of the metric (per unit of ln(metric) on the log scale)", ""),
    "Spearman ρ": ("rank correlation of the metric with the target", ""),
    "p": ("p-value of Spearman ρ (chance of |ρ| this large without a relation)", ""),
    "n": ("rows with a finite metric and target", ""),
}


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


def _caption(p: Path, target: str) -> str:
    """A heading for a plot file of `lcfast analyze` (scatter_M_vs_T, epochs_M, depth_M)."""
    stem = p.stem
    if stem.startswith("scatter_") and stem.endswith(f"_vs_{target}"):
        return f"`{target}` against `{stem[len('scatter_'):-len(f'_vs_{target}')]}`"
    for prefix, what in (("epochs_", "over training"), ("depth_", "through depth"),
                         ("convergence_", "against the train positions measured")):
        if stem.startswith(prefix):
            return f"`{stem[len(prefix):]}` {what}"
    return stem


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
    plots_note: str | None = None,
    per_class: dict | None = None,
) -> Path:
    """Write `out_dir/report.md` and return its path.

    measurements_csv: a table of one row per model/checkpoint (read like `lcfast analyze` reads it,
    so the paper's tables work too), or None. correlations_df: the frame `analyze` returned, or None.
    plots: PNG paths (scatter_*, epochs_*, depth_* get a section each, with a caption).
    notes: strings, written verbatim as a list (say what is approximate or missing). plots_note: a
    paragraph saying which metrics are plotted and why. per_class: `AnalysisResult.per_class` (the
    per-class view) or None; its section shows per_class_*.png among `plots`.
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
    shown_columns: list[str] = []
    if measurements_csv is not None:
        parts += _models_section(measurements_csv, shown_columns)
    if correlations_df is not None and len(correlations_df):
        parts += _correlations_section(correlations_df, target, shown_columns)
    if measurements_csv is not None:
        parts += _precision_section(measurements_csv)
    plots = [Path(p) for p in plots or ()]
    if per_class is not None:
        parts += _per_class_section(per_class, [p for p in plots if p.name.startswith("per_class_")], out)
        plots = [p for p in plots if not p.name.startswith("per_class_")]
    parts += _plots_section(plots, plots_note, target, out)
    notes = [str(n) for n in notes or ()]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {' '.join(n.split())}" for n in notes]
    parts += _glossary_section(shown_columns, correlations_df)

    path = out / REPORT_FILE
    atomic_write_text(path, "\n".join(parts).rstrip() + "\n")
    return path


def _models_section(measurements_csv, shown_columns: list[str]) -> list[str]:
    """## Models: the first MAX_MODEL_ROWS rows (model columns, then the headline metrics); adds the
    columns shown to `shown_columns`."""
    from lcfast.pipeline.analyze import load_tables

    data, _, derived = load_tables([measurements_csv])
    cols = [c for c in _MODEL_COLUMNS if c in data.columns]
    mcols = [c for c in _METRIC_COLUMNS if c in data.columns and data[c].notna().any()]
    table = data[cols + mcols]
    shown_columns += list(table.columns)
    sort = [c for c in ("n_params", "model", "epoch", "checkpoint") if c in table.columns]
    if sort:
        table = table.sort_values(sort, kind="stable")
    parts = ["", "## Models", "",
             f"{len(data)} rows from `{Path(measurements_csv).name}`"
             + (f" (showing the first {MAX_MODEL_ROWS})" if len(data) > MAX_MODEL_ROWS else "") + ".",
             "", markdown_table(table.head(MAX_MODEL_ROWS))]
    if derived:
        parts += ["", "Derived columns: " + "; ".join(derived) + "."]
    return parts


def _precision_section(measurements_csv) -> list[str]:
    """## Precision: per metric, stable at the size measured and roughly the positions it needs, from
    the convergence.csv beside the measurements (nothing when there is none or it has one size)."""
    from lcfast.pipeline.analyze.convergence import convergence_summary, load_convergence

    conv = load_convergence([measurements_csv])
    summary = convergence_summary(conv) if conv is not None else []
    if not summary:
        return []
    rows = []
    for s in summary:
        known = s["rows"] - s["unknown"]
        verdict = (f"{s['stable']} of {known}" if known else "unknown (one fold: no SE)")
        needs = (f"≈ {s['needs']:,}" if s["needs"] is not None
                 else f"more than {s['n_max']:,}" if known else "—")
        rows.append((f"`{s['metric']}`", verdict, f"{s['n_max']:,}", needs))
    table = pd.DataFrame(rows, columns=["metric", "rows stable at the size measured", "largest size",
                                        "positions it needs (median)"])
    return ["", "## Precision", "",
            "Each metric was measured again on nested random halves of the train windows (the folds of "
            "`lcfast collect --folds K`; convergence.csv). A row is *stable* when the last doubling of "
            "positions moved the metric by less than 2 standard errors (its jackknife SE over the folds); "
            "the positions it needs are the smallest size from which every doubling did. A metric that is "
            "not stable still moves with the amount of data: compare it only between models measured on "
            "the same number of positions (docs/metrics.md, \"Precision\").", "", markdown_table(table)]


def _correlations_section(c: pd.DataFrame, target: str, shown_columns: list[str]) -> list[str]:
    """## Correlation with the target: the fit table, how to read it, what was pooled; adds the
    columns shown to `shown_columns`."""
    from lcfast.pipeline.analyze import EXACT_P_NOTE, format_p, has_exact_p

    show = [k for k in ("metric", "scale", "r2", "slope", "spearman_rho", "p_value", "n") if k in c.columns]
    table = c[show].rename(columns={"r2": "R²", "spearman_rho": "Spearman ρ", "p_value": "p"})
    if "p" in table.columns:  # scipy's 0 is never the p-value (see format_p)
        table = table.assign(p=[format_p(v, ".3g", rho, n) for v, rho, n in
                                zip(c["p_value"], c.get("spearman_rho", [None] * len(c)), c.get("n", [None] * len(c)))])
    shown_columns += list(table.columns)
    parts = ["", f"## Correlation with `{target}`", "",
             f"Linear fit of {target} against each metric — against ln(metric) where `scale` is `log` "
             "(the metric is positive on every row) — with R², slope, Spearman ρ and its p-value; "
             f"sorted by R². For a metric that is smaller under more collapse, a positive ρ means that "
             f"models with a lower {target} are more collapsed (the paper's finding); for one that is "
             "larger, a negative ρ. Which way each metric goes: the glossary below.", "",
             markdown_table(table)] + (["", EXACT_P_NOTE[0].upper() + EXACT_P_NOTE[1:] + "."] if has_exact_p(c) else [])
    if c.attrs.get("pooled") or c.attrs.get("kept_apart"):
        from lcfast.pipeline.analyze import pooling_line

        line = pooling_line(c.attrs.get("pooled") or {}, c.attrs.get("kept_apart") or [])
        parts += ["", line[0].upper() + line[1:] + " (definitions: docs/metrics.md)."]
    return parts


def _per_class_section(view: dict, plots: list[Path], out: Path) -> list[str]:
    """## Which classes can collapse: context entropy against per-class variability (the view's sentences)."""
    parts = ["", "## Which classes can collapse", "",
             "Next-token labels are soft: the same context is followed by different tokens, so a class whose "
             "contexts do not determine it cannot shrink to a point. For each class c, its context entropy "
             "h_k(c) is H(next token | the k preceding tokens) over the train shard, averaged over the positions "
             "labelled c (0 bits: always predictable from its context); its variability is its CDNV to the "
             "nearest class mean (σ²_c and σ²_c′ over the squared distance of the two means). Spearman ρ over "
             "the kept classes, each class counted once; definitions in docs/metrics.md.", ""]
    parts += [f"- {' '.join(str(line).split())}" for line in view.get("lines", [])]
    files = view.get("files") or []
    if files and view.get("dir"):
        parts += ["", "Every model, order and variability: "
                  + ", ".join(f"`{_rel(Path(view['dir']) / f, out)}`" for f in files)
                  + (f"; one row per class: `{_rel(Path(view['source']), out)}`." if view.get("source") else ".")]
    for p in plots:
        parts += ["", f"![{p.stem}]({_rel(p, out)})"]
    return parts


def _plots_section(plots: list[Path], plots_note: str | None, target: str, out: Path) -> list[str]:
    """## Plots: a subsection per kind (scatter, over training, through depth, other), each plot
    under its caption, linked relative to `out`."""
    if not plots:
        return []
    parts = ["", "## Plots"]
    if plots_note:
        parts += ["", " ".join(str(plots_note).split())]
    kinds = (("scatter_", None, ""),
             ("epochs_", "Over training",
              "Each metric after every epoch of the models measured at every checkpoint."),
             ("depth_", "Through depth", "Each metric of the hidden states, layer by layer."),
             ("convergence_", "Against the amount of data",
              "Each metric on nested random subsamples of the train windows (±1 SE), log x axis."),
             ("", "Other plots", ""))
    done: set[Path] = set()
    for prefix, heading, intro in kinds:
        group = [p for p in plots if p.name.startswith(prefix) and p not in done]
        if not group:
            continue
        done.update(group)
        if heading:
            parts += ["", f"### {heading}"] + (["", intro] if intro else [])
        for p in group:
            parts += ["", f"{'####' if heading else '###'} {_caption(p, target)}", "",
                      f"![{p.stem}]({_rel(p, out)})"]
    return parts


def _glossary_section(shown_columns: list[str], correlations_df: pd.DataFrame | None) -> list[str]:
    """## Glossary of every column shown and every metric in the correlation table."""
    known = [c for c in dict.fromkeys(shown_columns) if c in GLOSSARY and c != "metric"]
    metrics_shown = [m for m in (correlations_df["metric"] if correlations_df is not None and len(correlations_df)
                                 and "metric" in correlations_df.columns else []) if m in GLOSSARY]
    known += [m for m in metrics_shown if m not in known]
    if not known:
        return []
    rows = pd.DataFrame([(f"`{c}`", GLOSSARY[c][0], GLOSSARY[c][1] or "") for c in known],
                        columns=["column", "what it is", "more collapse"])
    return ["", "## Glossary", "",
            "What each column means and, for a collapse metric, which way it moves as the representation "
            "collapses (smaller ↓, larger ↑, → a value). Features are the LM head's inputs; a class is a "
            "next token; C the number of classes kept. Formulas, and how these keys relate to the "
            "paper's columns: docs/metrics.md in the lcfast repository.", "", markdown_table(rows)]
