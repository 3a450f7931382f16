"""Correlate neural-collapse metrics with a target (default: validation loss) across models.

`analyze(csv_paths, target="val_loss", out_dir=...)` reads one or more tables — lcfast's own
`lcfast measure` CSVs (one row per (model, checkpoint): the canonical metric keys, or with
`--profile paper` the paper's columns) and the paper's artifact tables (lc-2024_10_24 and the older
lc-2024_05_18, packaged in lcfast/reference, their own column names) — and, for every metric column, fits
`target ~ slope · x + intercept` where x is ln(metric) when the metric is positive on every row used
(`scale = "log"`) and the metric itself otherwise (`scale = "linear"`). It reports R², slope,
intercept, Pearson r, Spearman ρ with its p-value and n, writes `out_dir/correlations.csv`,
`out_dir/data.csv` (the normalised table that was analysed), `out_dir/analysis.json`, and PNG plots
in `out_dir`: `scatter_<metric>_vs_<target>.png` (each metric vs the target, coloured by parameter
count on a log scale) and `epochs_<metric>.png` (each metric vs epoch, one line per model, when
some model has several checkpoints). When a row's collection lies in a run trained with
`lcfast train --track-nc` (its `collect_dir` is RUN/collect/<checkpoint> and RUN/nc_track.csv
exists), the epoch plots draw that run's tracked curve (x = epoch as a fraction) with the exact
points of its collected checkpoints on it (then one exact checkpoint is enough). Tables of
`collect --layers` collections (a `layer` column) give `depth_<metric>.png`: each metric against
the layer, one line per model; their correlations use the LM-head rows only (`head` True).

Like with like (docs/metrics.md): a column pools rows of several tables only where its definition
is the same in each. Paper columns are renamed to canonical keys where they are the same quantity
(`PAPER_TO_CANONICAL`, `PAPER_05_18_TO_SHARED`); the paper's cdnv (‖Δμ‖⁴) stays `cdnv`, and a
canonical row's nc1_cdnv joins it only when its `cdnv_power` is 2; older-table columns that share a
name but not a definition get a `[05_18]` tag. `AnalysisResult.pooled` lists the columns that
pooled several files, `.kept_apart` the related quantities that were not merged.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lcfast.errors import DataError, UsageError

DEFAULT_TARGET = "val_loss"
CORRELATIONS_FILE = "correlations.csv"
DATA_FILE = "data.csv"
SUMMARY_FILE = "analysis.json"

CORRELATION_COLUMNS = [
    "metric", "scale", "r2", "slope", "intercept", "pearson_r", "spearman_rho", "p_value", "n",
    "slope_stderr", "fit_p_value", "source_column", "note",
]

# Columns that describe a model or its outcome, never analysed as metrics (any may be the target).
META_COLUMNS = {
    "model", "checkpoint", "source", "run", "path", "name", "n_params", "params", "layers",
    "width", "heads", "context", "vocab_size", "dim", "epochs", "epoch", "seed", "step", "steps",
    "lr", "batch_size", "tokens", "train_tokens", "val_tokens", "variant", "cdnv_power", "exact",
    "layer", "head",
}
OUTCOME_COLUMNS = {"val_loss", "val_acc", "perplexity", "train_loss", "train_acc", "val_ppl", "collect_val_loss"}
# Bookkeeping counts, not collapse metrics (hits/misses and matches/misses become hit rates).
BOOKKEEPING_COLUMNS = {"n_classes", "n_samples", "degenerate_pairs", "min_count", "hits", "misses", "matches", "profile"}

# The paper's lc-2024_10_24 columns (and `lcfast measure --profile paper`'s, the same definitions)
# that are the same quantity as a canonical key, checked against the paper's code
# (docs/metrics.md). Every other paper column keeps its name: cdnv (‖Δμ‖⁴, not nc1_cdnv's ‖Δμ‖²),
# norms_var / norms_log_* / simdot_* / simcos_var / dists_* (sample variances, ddof 1, or no
# canonical twin), interfere_* (raw dot products, not cosines). Its dual_error is the ETF
# distance of W Mᵀ (the paper's self_duality_error), exactly nc3_dual_error.
PAPER_TO_CANONICAL = {
    "etf_error": "nc2_etf_error",
    "dual_error": "nc3_dual_error",
    "norms_mean": "nc2_norm_mean",
    "log_kern_mean": "gnc2_log_mean",
    "log_kern_var": "gnc2_log_var",
    "simcos_mean": "nc3_dual_cos_mean",
}
# The older lc-2024_05_18 table (the paper's code of May 2024): columns that are the same quantity
# as a canonical key or a 10_24 column (checked against that code and, value by value, against the
# 10_24 table on its 230 models); the rest keep their names, and the 05_18 columns that share a
# name but not a definition with a 10_24 column (norms_* of ‖m_c‖², log_dist_* of uncentred
# means, dists_* of another formula) are tagged [05_18].
PAPER_05_18_TO_SHARED = {
    "cdnv_mean": "cdnv",  # power 2, mean over pairs: the 10_24 cdnv (float32 round-off apart)
    "sims_mean": "nc3_dual_cos_mean",  # cos(w_c, m_c): the 10_24 simcos_mean
    "interfere_mean": "nc2_interference_mean",  # mean over pairs of cos(m_c, m_c'): not 10_24's raw dots
}
_05_18_TAGGED = ("norms_mean", "norms_log_mean", "dists_mean")
_05_18_MARKERS = {"cdnv_mean", "sims_mean", "matches", "log_dist_mean", "norms_scl_mean"}
OTHER_RENAMES = {"perplex": "perplexity"}
# Quantities that look alike but are defined differently: listed as kept apart when both occur.
KEPT_APART = (
    ("nc1_cdnv", "cdnv", "CDNV with ‖Δμ‖² vs the paper's ‖Δμ‖⁴"),
    ("nc2_interference_mean", "interfere_mean", "cosines vs raw dot products"),
    ("nc2_interference_var", "interfere_var", "cosines vs raw dot products"),
    ("nc2_lognorm_var", "norms_log_var", "ddof 0 vs 1"),
    ("nc3_dual_cos_var", "simcos_var", "ddof 0 vs 1"),
    ("nc4_agreement", "hit_rate", "nearest kept mean vs nearest of all C means"),
    ("nc4_agreement", "match_rate", "LM argmax over the vocabulary vs over seen classes"),
    ("hit_rate", "match_rate", "all C classes vs seen classes only"),
)

_PAPER_MODEL_RE = re.compile(
    r"^(?P<layers>\d+)x(?P<width>\d+)_(?P<epochs>\d+)(?P<variant>[A-Za-z]+)(?P<seed>\d*)@(?P<ckpt>\d+)$"
)


@dataclass
class AnalysisResult:
    """Everything `run_analysis` produced; `analyze` returns `.correlations`."""

    correlations: pd.DataFrame
    data: pd.DataFrame
    target: str
    inputs: list[str]
    metrics: list[str]
    renamed: dict[str, dict[str, str]] = field(default_factory=dict)
    derived: list[str] = field(default_factory=list)
    pooled: dict[str, list[str]] = field(default_factory=dict)
    kept_apart: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Loading and normalising tables
# ----------------------------------------------------------------------------------------------



def _save_fig(fig, path) -> None:
    """PNG of `fig` written to `path` (a staged temporary: see `make_plots`)."""
    fig.savefig(path, format="png", bbox_inches="tight")


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV file")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path}: empty file, expected a CSV table with a header") from e
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV table ({' '.join(str(e).split())})") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    # Index columns written by DataFrame.to_csv (the 05_18 table has one).
    drop = [c for c in df.columns if str(c).startswith("Unnamed:") or str(c).strip() == ""]
    return df.drop(columns=drop)


def _is_05_18(df: pd.DataFrame) -> bool:
    return bool(_05_18_MARKERS & set(df.columns))


def _renames(df: pd.DataFrame) -> dict[str, str]:
    """Column renames that put this table's columns under the names of their definitions."""
    if _is_05_18(df):
        table = {**PAPER_05_18_TO_SHARED, **{c: f"{c}[05_18]" for c in _05_18_TAGGED}}
    else:
        table = dict(PAPER_TO_CANONICAL)
    table.update(OTHER_RENAMES)
    renamed = {c: k for c, k in table.items() if c in df.columns and k not in df.columns}
    # Two columns mapping to one key: keep the first, leave the other under its name.
    seen: set[str] = set()
    for c in list(renamed):
        if renamed[c] in seen:
            del renamed[c]
        seen.add(renamed.get(c, ""))
    return renamed


def _rate(df: pd.DataFrame, num: str, name: str, tag: str, derived: list[str]) -> None:
    if name in df.columns or num not in df.columns or "misses" not in df.columns:
        return
    h = pd.to_numeric(df[num], errors="coerce")
    tot = h + pd.to_numeric(df["misses"], errors="coerce")
    df[name] = h / tot.where(tot > 0)
    derived.append(f"{tag}{name} = {num}/({num}+misses)")


def _derive(df: pd.DataFrame, tag: str) -> tuple[pd.DataFrame, list[str]]:
    """Columns computed from others, each the same quantity as its name elsewhere (docs/metrics.md)."""
    derived: list[str] = []
    if _is_05_18(df):
        # NCC and LM argmax both over the classes seen in training (the code of May 2024)
        _rate(df, "matches", "match_rate", tag, derived)
        if "simcos_var" not in df.columns and "sims_std" in df.columns:
            # both ddof 1: 05_18's sims_std² equals 10_24's simcos_var on all 230 shared models
            df["simcos_var"] = pd.to_numeric(df["sims_std"], errors="coerce") ** 2
            df = df.drop(columns=["sims_std"])
            derived.append(f"{tag}simcos_var = sims_std²")
    else:
        _rate(df, "hits", "hit_rate", tag, derived)  # NCC over all C class means
    if "nc1_cdnv" in df.columns and "cdnv_power" in df.columns:
        # a canonical row's CDNV is the paper's cdnv when its power is 2; other powers keep apart
        p = pd.to_numeric(df["cdnv_power"], errors="coerce")
        v = pd.to_numeric(df["nc1_cdnv"], errors="coerce")
        moved = []
        for pw in sorted(set(p.dropna()) - {1.0}):
            rows = (p == pw) & v.notna()
            if not rows.any():
                continue
            dst = "cdnv" if pw == 2.0 else f"nc1_cdnv[p={pw:g}]"
            if dst not in df.columns:
                df[dst] = np.nan
            df.loc[rows & df[dst].isna(), dst] = v[rows]
            df.loc[rows, "nc1_cdnv"] = np.nan
            moved.append(f"{tag}{dst} ← nc1_cdnv of the rows with cdnv_power {pw:g}")
        derived.extend(moved)
    if "unc3" not in df.columns and {"nc3_dual_cos_mean", "nc3_dual_cos_var"} <= set(df.columns):
        mean = pd.to_numeric(df["nc3_dual_cos_mean"], errors="coerce")
        var = pd.to_numeric(df["nc3_dual_cos_var"], errors="coerce")
        df["unc3"] = np.sqrt(var.clip(lower=0)) / mean
        derived.append(f"{tag}unc3 = sqrt(nc3_dual_cos_var)/nc3_dual_cos_mean")
    return df, derived


def pooling(data: pd.DataFrame) -> tuple[dict[str, list[str]], list[str]]:
    """(columns holding values from several source files → those files, related quantities kept
    apart as 'a ≠ b (why)') of a table that `load_tables` assembled."""
    pooled: dict[str, list[str]] = {}
    by_source = data.attrs.get("columns_by_source", {})
    for c in data.columns:
        if c in META_COLUMNS or c in OUTCOME_COLUMNS or c in BOOKKEEPING_COLUMNS or c == "source":
            continue
        if not pd.api.types.is_numeric_dtype(data[c]):
            continue
        files = sorted(f for f, cols in by_source.items() if c in cols)
        if len(files) > 1:
            pooled[str(c)] = files
    apart = [f"{a} ≠ {b} ({why})" for a, b, why in KEPT_APART
             if a in data.columns and b in data.columns and data[a].notna().any() and data[b].notna().any()]
    return pooled, apart


def pooling_line(pooled: dict[str, list[str]], apart: list[str]) -> str:
    """One line: which columns pooled which files, and what was kept apart."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for c, files in pooled.items():
        groups.setdefault(tuple(files), []).append(c)
    parts = [f"{', '.join(cols)} ({' + '.join(files)})" for files, cols in groups.items()]
    line = "pooled across tables: " + ("; ".join(parts) if parts else "no column")
    if apart:
        line += "; kept apart: " + "; ".join(apart)
    return line


def _parse_paper_models(df: pd.DataFrame) -> bool:
    """Split the paper's ids `LLxWWWW_EEv[seed]@k` into model / layers / width / epochs / checkpoint."""
    if "model" not in df.columns:
        return False
    parts = df["model"].astype(str).str.extract(_PAPER_MODEL_RE)
    ok = parts["ckpt"].notna()
    if not ok.any():
        return False
    ids = df["model"].astype(str)
    df["model"] = np.where(ok, ids.str.split("@").str[0], ids)
    for col, src in (("layers", "layers"), ("width", "width"), ("epochs", "epochs")):
        vals = pd.to_numeric(parts[src], errors="coerce")
        df[col] = df[col].where(df[col].notna(), vals) if col in df.columns else vals
    ck = pd.to_numeric(parts["ckpt"], errors="coerce")
    if "checkpoint" not in df.columns:
        df["checkpoint"] = ck
    if "epoch" not in df.columns:
        # The paper's @k is the 0-based index of per-epoch checkpoints: @9 of a 10-epoch run is epoch 10.
        df["epoch"] = ck + 1
    if "variant" not in df.columns:
        df["variant"] = parts["variant"]
    return True


def load_tables(csv_paths, notes: list[str] | None = None) -> tuple[pd.DataFrame, dict, list[str]]:
    """Read and normalise CSVs into one table (one row per (model, checkpoint) where known).

    Returns (table, renamed {file: {paper column: canonical key}}, derived descriptions).
    """
    notes = notes if notes is not None else []
    if isinstance(csv_paths, (str, Path)):
        csv_paths = [csv_paths]
    paths = [Path(p) for p in csv_paths]
    if not paths:
        raise UsageError("analyze: give at least one CSV file")
    frames, renamed_all, derived_all = [], {}, []
    by_source: dict[str, set[str]] = {}  # columns holding values, per file (what `pooling` reports)
    for p in paths:
        df = _read_csv(p)
        if len(df.columns) == 0:
            raise DataError(f"{p}: no columns")
        renamed = _renames(df)
        df = df.rename(columns=renamed)
        tag = f"{p.name}: " if len(paths) > 1 else ""
        df, derived = _derive(df, tag)
        if _parse_paper_models(df):
            derived.append(f"{tag}model/layers/width/epochs/checkpoint/epoch parsed from paper ids 'LLxWWWW_EEv@k'")
        df["source"] = p.name
        by_source[p.name] = {str(c) for c in df.columns if df[c].notna().any()}
        if renamed:
            renamed_all[str(p)] = dict(renamed)
        derived_all.extend(derived)
        frames.append(df)
    if len(frames) == 1:
        frames[0].attrs["columns_by_source"] = by_source
        return frames[0], renamed_all, derived_all
    data = pd.concat(frames, ignore_index=True, sort=False)
    if {"model", "checkpoint"} <= set(data.columns):
        key = data["model"].astype(str) + "\x00" + data["checkpoint"].astype(str)
        if "layer" in data.columns:  # one row per (model, checkpoint, layer)
            key = key + "\x00" + data["layer"].astype(str)
        dup = key.duplicated(keep=False) & data.groupby(key)["source"].transform("nunique").gt(1)
        if dup.any():
            n_keys = key[dup].nunique()
            conflicts = _conflicts(data[dup], key[dup])
            # Same name, different values for the same model: the files disagree on the column's
            # meaning (e.g. the paper's two tables define norms_mean differently) -> keep each file's.
            for c in conflicts:
                for src in data["source"].unique():
                    data[f"{c}[{Path(src).stem}]"] = data[c].where(data["source"] == src)
                data = data.drop(columns=[c])
            data["source"] = data.groupby(key)["source"].transform(lambda s: "+".join(dict.fromkeys(s)))
            data = data.groupby(key, sort=False, as_index=False).first()
            msg = f"{n_keys} (model, checkpoint) rows appear in several files and were merged"
            if conflicts:
                msg += (
                    f"; columns whose values differ between files were kept per file as NAME[file]: "
                    f"{', '.join(map(str, conflicts))}"
                )
            notes.append(msg)
    data.attrs["columns_by_source"] = by_source
    return data, renamed_all, derived_all


def _conflicts(rows: pd.DataFrame, key: pd.Series) -> list[str]:
    out = []
    for c in rows.columns:
        if c == "source" or not pd.api.types.is_numeric_dtype(rows[c]):
            continue
        g = rows[c].groupby(key)
        lo, hi = g.min().to_numpy(dtype=np.float64), g.max().to_numpy(dtype=np.float64)
        ok = np.isfinite(lo) & np.isfinite(hi)
        # float32 round-off between tables (the paper's cdnv vs cdnv_mean) is not a conflict.
        if not np.allclose(lo[ok], hi[ok], rtol=1e-5, atol=1e-12):
            out.append(c)
    return out


def metric_columns(data: pd.DataFrame, target: str) -> list[str]:
    """Numeric columns analysed as metrics (not meta, outcome, bookkeeping, or the target)."""
    out = []
    for c in data.columns:
        if c == target or c in META_COLUMNS or c in OUTCOME_COLUMNS or c in BOOKKEEPING_COLUMNS:
            continue
        if str(c).endswith(("_seconds", "_time")):
            continue
        s = data[c]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            continue
        if s.notna().any():
            out.append(c)
    return out


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def correlate(x, y) -> dict:
    """Fit y ~ slope·t(x) + intercept with t = ln if x > 0 everywhere else identity; Spearman ρ."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = np.isfinite(x) & np.isfinite(y)
    x, y = x[m], y[m]
    n = int(x.size)
    row = {
        "scale": "log" if n and np.all(x > 0) else "linear",
        "r2": math.nan, "slope": math.nan, "intercept": math.nan, "pearson_r": math.nan,
        "spearman_rho": math.nan, "p_value": math.nan, "n": n, "slope_stderr": math.nan,
        "fit_p_value": math.nan, "note": "",
    }
    if n < 3:
        row["note"] = f"only {n} rows with a finite value"
        return row
    t = np.log(x) if row["scale"] == "log" else x
    if np.ptp(t) == 0:
        row["note"] = "constant"
        return row
    if np.ptp(y) == 0:
        row["note"] = "target constant"
        return row
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lr = stats.linregress(t, y)
        sp = stats.spearmanr(x, y)
    row.update(
        r2=float(lr.rvalue**2), slope=float(lr.slope), intercept=float(lr.intercept),
        pearson_r=float(lr.rvalue), slope_stderr=float(lr.stderr), fit_p_value=float(lr.pvalue),
        spearman_rho=float(sp.statistic if hasattr(sp, "statistic") else sp[0]),
        p_value=float(sp.pvalue if hasattr(sp, "pvalue") else sp[1]),
    )
    return row


#: what a shown p-value of a perfect rank correlation is (tables that show one print this under them)
EXACT_P_NOTE = ("the p-value shown for a perfect rank correlation (|ρ| = 1, where scipy's asymptotic "
                "formula gives 0) is the exact permutation p-value 2/n!")


def format_p(p, spec: str = ".2g", rho=None, n=None) -> str:
    """A Spearman p-value for people; "—" when undefined. scipy gives exactly 0 in two cases: a
    perfect rank correlation (|ρ| = 1: its t statistic is infinite), shown as the exact permutation
    p-value 2/n! when `rho` and `n` are given (only the two monotone orders of n distinct values
    reach |ρ| = 1); else an underflow, shown as `< 1e-300`."""
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(p):
        return "—"
    if p != 0:
        return format(p, spec)
    try:
        perfect = abs(float(rho)) >= 1 - 1e-12 and 2 <= int(n) <= 170
    except (TypeError, ValueError):
        perfect = False
    return format(2 / math.factorial(int(n)), spec) if perfect else "< 1e-300"


def has_exact_p(corr: pd.DataFrame) -> bool:
    """Whether a correlation table has a p-value that `format_p` shows as the exact 2/n!."""
    rho = pd.to_numeric(corr.get("spearman_rho"), errors="coerce")
    p = pd.to_numeric(corr.get("p_value"), errors="coerce")
    return bool(((p == 0) & (rho.abs() >= 1 - 1e-12)).any()) if rho is not None and p is not None else False


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


def _color_setup(data: pd.DataFrame):
    """(values, norm, cmap) for colouring by parameter count on a log scale, or None."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    if "n_params" not in data.columns:
        return None
    v = pd.to_numeric(data["n_params"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any():
        return None
    lo, hi = float(v[ok].min()), float(v[ok].max())
    if lo == hi:
        lo, hi = lo / 1.5, hi * 1.5
    return v, LogNorm(vmin=lo, vmax=hi), mpl.colormaps["viridis"]


def _count(v: float, _pos=None) -> str:
    """80k, 1.2M: parameter counts on a colour bar."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}"


def _readable_log_axis(axis, lo: float, hi: float, fmt=None) -> None:
    """Plain tick labels on a log axis (0.25, 1.4 — never 2×10⁰), few enough not to overlap: the
    values 1, 2, 5 × 10^k in the range when there are 3 to 6 of them, else (a narrow range) a few
    evenly spaced round values, else (a wide one) powers of ten; no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter, NullLocator

    fmt = fmt or (lambda v, _pos=None: f"{v:.3g}")
    if not (lo > 0 and hi > 0):
        return
    inside = [m * 10.0**k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
              for m in (1, 2, 5) if lo * 0.97 <= m * 10.0**k <= hi * 1.03]
    if 3 <= len(inside) <= 6:
        axis.set_major_locator(FixedLocator(inside))
    elif len(inside) > 6:
        axis.set_major_locator(LogLocator(base=10, numticks=6))
    else:
        ticks = [t for t in MaxNLocator(nbins=5, steps=[1, 1.5, 2, 2.5, 3, 5, 10]).tick_values(lo, hi)
                 if t > 0 and lo * 0.97 <= t <= hi * 1.03]
        if len(ticks) < 2:
            ticks = [float(f"{lo:.2g}"), float(f"{hi:.2g}")]
        axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(fmt))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


_MARKERS = ["o", "s", "^", "D", "v", "P"]


def _point_styles(data: pd.DataFrame, m: np.ndarray):
    """Marker of each row by its number of layers and fill by its training epochs (hollow: the fewer
    of two), with the legend entries saying so ({legend title: handles}); plain circles where a
    column is missing or has too many values to tell apart."""
    from matplotlib.lines import Line2D

    n = len(data)
    marker = np.array(["o"] * n, dtype=object)
    filled = np.ones(n, dtype=bool)
    legends: dict[str, list] = {}
    if "layers" in data.columns:
        lay = pd.to_numeric(data["layers"], errors="coerce").to_numpy(dtype=np.float64)
        kinds = sorted(set(lay[m & np.isfinite(lay)]))
        if 1 < len(kinds) <= len(_MARKERS):
            for k, mk in zip(kinds, _MARKERS):
                marker[lay == k] = mk
                legends.setdefault("layers", []).append(Line2D([], [], ls="", marker=mk, color="gray", label=f"{int(k)}"))
    if "epochs" in data.columns:
        ep = pd.to_numeric(data["epochs"], errors="coerce").to_numpy(dtype=np.float64)
        kinds = sorted(set(ep[m & np.isfinite(ep)]))
        if len(kinds) == 2:
            filled = ep != kinds[0]
            for k, f in ((kinds[0], False), (kinds[1], True)):
                legends.setdefault("epochs of training", []).append(
                    Line2D([], [], ls="", marker="o", color="gray", markerfacecolor="gray" if f else "none", label=f"{int(k)}"))
    return marker, filled, legends


def _legends_below(fig, ax, legends: dict[str, list]) -> None:
    """Titled legends side by side under the axes (they never hide a point)."""
    if not legends:
        return
    fig.subplots_adjust(bottom=0.22)
    box = ax.get_position()
    n = len(legends)
    for k, (title, handles) in enumerate(legends.items()):
        fig.legend(handles=handles, title=title or None, loc="lower center",
                   bbox_to_anchor=(box.x0 + box.width * (k + 0.5) / n, 0.0), ncol=len(handles), fontsize=7,
                   title_fontsize=7, frameon=False, handletextpad=0.2, columnspacing=0.8)


def _scatter(data, metric, target, row, color, path: Path) -> None:
    """`target` against `metric` (log x axis where the fit is on ln(metric)), one point per model:
    colour = parameters, marker = layers, hollow = the shorter of two trainings; the fitted line."""
    import matplotlib.pyplot as plt

    x = pd.to_numeric(data[metric], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(data[target], errors="coerce").to_numpy(dtype=np.float64)
    m = np.isfinite(x) & np.isfinite(y)
    marker, filled, legends = _point_styles(data, m)
    fig, ax = plt.subplots(figsize=(5.6, 4.7), dpi=100)
    try:
        if color is not None:
            v, norm, cmap = color
            rgba = np.array([cmap(norm(c)) if np.isfinite(c) and c > 0 else (0.75, 0.75, 0.75, 1.0) for c in v])
            if (m & ~(np.isfinite(v) & (v > 0))).any():
                legends.setdefault("", []).append(
                    plt.Line2D([], [], ls="", marker="o", color=(0.75, 0.75, 0.75), label="n_params unknown"))
        else:
            rgba = np.array([plt.matplotlib.colors.to_rgba("tab:blue")] * len(x))
        for mk in dict.fromkeys(marker[m]):
            for f in (True, False):
                sel = m & (marker == mk) & (filled == f)
                if sel.any():
                    ax.scatter(x[sel], y[sel], marker=mk, s=30, facecolors=rgba[sel] if f else "none",
                               edgecolors=rgba[sel], linewidths=1.2)
        if color is not None:
            from matplotlib.cm import ScalarMappable

            sm = ScalarMappable(norm=color[1], cmap=color[2])
            sm.set_array([])
            cb = fig.colorbar(sm, ax=ax, label="parameters")
            _readable_log_axis(cb.ax.yaxis, color[1].vmin, color[1].vmax, _count)
        if row["scale"] == "log":
            ax.set_xscale("log")
            _readable_log_axis(ax.xaxis, float(np.nanmin(x[m])), float(np.nanmax(x[m])))
        if np.isfinite(row["r2"]):
            if row["scale"] == "log":
                xs = np.geomspace(np.nanmin(x[m]), np.nanmax(x[m]), 100)
                ys = row["slope"] * np.log(xs) + row["intercept"]
            else:
                xs = np.linspace(np.nanmin(x[m]), np.nanmax(x[m]), 100)
                ys = row["slope"] * xs + row["intercept"]
            (fit,) = ax.plot(xs, ys, color="crimson", lw=1.2, label="on ln x" if row["scale"] == "log" else "linear")
            legends["fit"] = [fit]
        _legends_below(fig, ax, legends)
        ax.set_xlabel(f"{metric}" + (" (log scale)" if row["scale"] == "log" else ""))
        ax.set_ylabel(target)
        ax.set_title(f"{target} vs {metric}: R² = {row['r2']:.3f}, Spearman ρ = {row['spearman_rho']:+.3f}, "
                     f"n = {row['n']}", fontsize=9)
        ax.grid(alpha=0.3)
        _save_fig(fig, path)
    finally:
        plt.close(fig)


def epoch_axis(data: pd.DataFrame) -> pd.Series | None:
    """Epoch of each row: `epoch`, else `epochs` when it varies within a model, else a numeric checkpoint."""
    if "model" not in data.columns:
        return None
    if "epoch" in data.columns:
        e = pd.to_numeric(data["epoch"], errors="coerce")
        if e.notna().any():
            return e
    if "epochs" in data.columns:
        e = pd.to_numeric(data["epochs"], errors="coerce")
        if e.notna().any() and (e.groupby(data["model"]).nunique() > 1).any():
            return e
    if "checkpoint" in data.columns:
        ck = data["checkpoint"]
        e = pd.to_numeric(ck, errors="coerce")
        if e.isna().all():  # e.g. "epoch-3", "checkpoint_7"
            e = pd.to_numeric(ck.astype(str).str.extract(r"(\d+)(?!.*\d)")[0], errors="coerce")
        if e.notna().any():
            return e
    return None


def epoch_lines(data: pd.DataFrame, epochs: pd.Series, metric: str,
                keep: frozenset = frozenset()) -> list[tuple[str, pd.DataFrame]]:
    """(model, its rows sorted by epoch with columns epoch, y and n_params) for every model with a
    value of `metric` at two or more epochs (or at one, for the models in `keep`): the lines of an
    over-training plot."""
    frame = pd.DataFrame({"model": data["model"].astype(str), "epoch": epochs,
                          "y": pd.to_numeric(data[metric], errors="coerce"),
                          "n_params": pd.to_numeric(data["n_params"], errors="coerce") if "n_params" in data.columns
                          else np.nan})
    frame = frame.dropna(subset=["epoch", "y"])
    return [(k, g.sort_values("epoch")) for k, g in frame.groupby("model", sort=False)
            if g["epoch"].nunique() > 1 or k in keep]


def tracked_tables(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{model: its run's nc_track.csv} for the rows whose collection lies in a run trained with
    `--track-nc` (`collect_dir` = RUN/collect/<checkpoint>, RUN/nc_track.csv present); {} otherwise.
    A file that cannot be read as a table with an `epoch` column is left out."""
    from lcfast.pipeline.track import TRACK_FILE

    if "collect_dir" not in data.columns or "model" not in data.columns:
        return {}
    out: dict[str, pd.DataFrame] = {}
    for model, cdir in zip(data["model"].astype(str), data["collect_dir"]):
        if model in out or not isinstance(cdir, str) or Path(cdir).parent.name != "collect":
            continue
        f = Path(cdir).parent.parent / TRACK_FILE
        if not f.is_file():
            continue
        try:
            t = pd.read_csv(f)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if "epoch" in t.columns and len(t):
            out[model] = t.assign(epoch=pd.to_numeric(t["epoch"], errors="coerce"))
    return out


def _line_label(model: str, g: pd.DataFrame) -> str:
    n = g["n_params"].iloc[0]
    return f"{model} ({_count(n)} parameters)" if np.isfinite(n) and n > 0 else model


def _epoch_plot(data, epochs, metric, scale, color, path: Path, tracked: dict | None = None) -> bool:
    """`metric` against the epoch, one line per model: up to 10 models each in its own colour, named
    in the legend; more, coloured by parameter count with a colour bar. Integer epoch ticks. A model
    trained with `--track-nc` (in `tracked`) is drawn as its tracked curve with the exact
    checkpoints as black-edged points on it."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    curves = {}  # model -> its tracked curve of this metric
    for k, t in (tracked or {}).items():
        if metric in t.columns:
            tc = pd.DataFrame({"epoch": t["epoch"], "y": pd.to_numeric(t[metric], errors="coerce")}).dropna()
            if len(tc):
                curves[k] = tc.sort_values("epoch")
    groups = epoch_lines(data, epochs, metric, keep=frozenset(curves))
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=100)
    try:
        by_size = len(groups) > 10 and color is not None
        for k, (name, g) in enumerate(groups):
            c = f"C{k % 10}"
            if by_size and np.isfinite(g["n_params"].iloc[0]) and g["n_params"].iloc[0] > 0:
                c = color[2](color[1](g["n_params"].iloc[0]))
            if name in curves:
                tc = curves[name]
                ax.plot(tc["epoch"], tc["y"], lw=1.5, color=c, label=_line_label(name, g))
                ax.plot(g["epoch"], g["y"], ls="none", marker="o", ms=5, mfc=c, mec="black", mew=0.8)
            else:
                ax.plot(g["epoch"], g["y"], marker="o", ms=5, lw=1.5, color=c, label=_line_label(name, g))
        extra = [tc for tc in curves.values()]
        _finish_epoch_axes(fig, ax, groups + [("", tc) for tc in extra], metric, scale, color if by_size else None,
                           n_models=len(groups))
        if curves and not by_size:
            handles, _ = ax.get_legend_handles_labels()
            handles += [Line2D([], [], color="gray", lw=1.5, label="tracked during training (--track-nc)"),
                        Line2D([], [], color="gray", ls="none", marker="o", ms=5, mec="black", mew=0.8,
                               label="exact (collect of the checkpoint)")]
            ax.legend(handles=handles, fontsize=7, loc="best")
        _save_fig(fig, path)
    finally:
        plt.close(fig)
    return True


def _finish_epoch_axes(fig, ax, groups, metric: str, scale: str, color, n_models: int | None = None) -> None:
    """Axes of an over-training plot: integer epochs, a log y axis only over a wide range, the legend
    (or, for many models coloured by size, a colour bar), and a title naming the model."""
    from matplotlib.ticker import MaxNLocator

    ys = pd.concat([g["y"] for _, g in groups])
    if scale == "log" and (ys > 0).all() and ys.max() / ys.min() >= 30:
        ax.set_yscale("log")
        _readable_log_axis(ax.yaxis, float(ys.min()), float(ys.max()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ep = pd.concat([g["epoch"] for _, g in groups])
    ax.set_xlim(float(ep.min()) - 0.25, float(ep.max()) + 0.25)
    if color is not None:
        from matplotlib.cm import ScalarMappable

        sm = ScalarMappable(norm=color[1], cmap=color[2])
        sm.set_array([])
        cb = fig.colorbar(sm, ax=ax, label="parameters")
        _readable_log_axis(cb.ax.yaxis, color[1].vmin, color[1].vmax, _count)
    else:
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    n = len(groups) if n_models is None else n_models
    who = groups[0][0] if n == 1 else f"{n} models"
    ax.set_title(f"{metric} over training — {who}", fontsize=9)
    ax.grid(alpha=0.3)


def head_rows(data: pd.DataFrame) -> pd.Series:
    """Rows of the LM head's input (what the correlations use): all rows, unless a `layer` column
    says some rows are hidden layers (`head` False)."""
    if "layer" not in data.columns or "head" not in data.columns:
        return pd.Series(True, index=data.index)
    h = data["head"]
    return h.isna() | h.astype(str).str.lower().isin(("true", "1", "1.0"))


def depth_data(data: pd.DataFrame) -> pd.DataFrame | None:
    """Rows with a layer, for models measured at ≥ 2 depths (None when there are none)."""
    if "layer" not in data.columns or "model" not in data.columns:
        return None
    layer = pd.to_numeric(data["layer"], errors="coerce")
    d = data[layer.notna()].assign(layer=layer[layer.notna()])
    line = d["model"].astype(str) + ("/" + d["checkpoint"].astype(str) if "checkpoint" in d.columns else "")
    d = d.assign(_line=line)
    d = d[d.groupby("_line")["layer"].transform("nunique") > 1]
    return d if len(d) else None


def _depth_plot(depth: pd.DataFrame, metric: str, path: Path) -> bool:
    import matplotlib.pyplot as plt

    frame = depth.assign(y=pd.to_numeric(depth[metric], errors="coerce")).dropna(subset=["y"])
    groups = [(k, g.sort_values("layer")) for k, g in frame.groupby("_line", sort=False) if g["layer"].nunique() > 1]
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=100)
    try:
        for name, g in groups:
            ax.plot(g["layer"], g["y"], marker="o", ms=5, lw=1.5, alpha=0.9, label=name)
        if len(groups) <= 12:
            ax.legend(fontsize=7, loc="best")
        if (frame["y"] > 0).all() and frame["y"].max() / max(frame["y"].min(), 1e-300) > 20:
            ax.set_yscale("log")
            _readable_log_axis(ax.yaxis, float(frame["y"].min()), float(frame["y"].max()))
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (hidden state; 0 = embeddings)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} through depth — " + (groups[0][0] if len(groups) == 1 else f"{len(groups)} models"),
                     fontsize=9)
        ax.grid(alpha=0.3)
        _save_fig(fig, path)
    finally:
        plt.close(fig)
    return True


def make_depth_plots(depth: pd.DataFrame, metrics: list[str], out_dir: Path, stage) -> list[Path]:
    """`depth_<metric>.png` for every metric: the metric against the layer, one line per model, drawn
    into `stage` (a `lcfast.io.Staging`: the caller publishes them with its other outputs)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    plots = []
    for m in metrics:
        p = Path(out_dir) / f"depth_{_safe(m)}.png"
        if m in depth.columns and _depth_plot(depth, m, stage.path(p)):
            plots.append(p)
        else:
            stage.forget(p)
    return plots


def make_plots(result: AnalysisResult, out_dir: Path, stage=None, kinds=("scatter", "epochs")) -> list[Path]:
    """Scatter of each metric vs the target; metric-vs-epoch plots when models have several checkpoints
    (`kinds`: which of the two to draw).

    The plots are published together once all are drawn (into `stage`, a `lcfast.io.Staging`, when
    given: the caller publishes them with its other outputs and then calls `remove_stale_plots`)."""
    import matplotlib

    from lcfast.io import staged

    if stage is None:
        ours = (Path(out_dir) / SUMMARY_FILE).is_file()
        with staged() as st:
            plots = make_plots(result, out_dir, st, kinds)
        if ours:
            remove_stale_plots(out_dir, plots)
        return plots
    matplotlib.use("Agg", force=True)
    data, target = result.data, result.target
    pdir = Path(out_dir)
    color = _color_setup(data)
    if color is None and "scatter" in kinds:
        result.notes.append("no positive n_params column: scatter plots are not coloured by parameter count")
    plots: list[Path] = []
    for _, row in result.correlations.iterrows():
        if "scatter" not in kinds or row["n"] < 1 or row["metric"] not in data.columns:
            continue
        p = pdir / f"scatter_{_safe(row['metric'])}_vs_{_safe(target)}.png"
        _scatter(data, row["metric"], target, row, color, stage.path(p))
        plots.append(p)
    epochs = epoch_axis(data) if "epochs" in kinds else None
    if epochs is not None:
        tracked = tracked_tables(data)
        if tracked:
            result.notes.append(f"epoch plots: tracked curves from the nc_track.csv of {len(tracked)} run(s) "
                                "(lcfast train --track-nc), exact points from the collected checkpoints")
        scales = dict(zip(result.correlations["metric"], result.correlations["scale"]))
        for m in [target] + list(result.correlations["metric"]):
            p = pdir / f"epochs_{_safe(m)}.png"
            if _epoch_plot(data, epochs, m, scales.get(m, "log"), color, stage.path(p), tracked):
                plots.append(p)
            else:
                stage.forget(p)
    return plots


def remove_stale_plots(out_dir: Path, keep: list[Path]) -> None:
    """Delete the plots of an earlier analysis in `out_dir` (a folder an analysis wrote: it has
    analysis.json) that this one did not redraw (they would be stale); called only after the new
    plots are published."""
    keep_names = {Path(p).name for p in keep}
    for old in [p for pat in ("scatter_*.png", "epochs_*.png", "depth_*.png") for p in Path(out_dir).glob(pat)]:
        if old.name not in keep_names:
            old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


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
            notes.append(f"{n_layer_rows} hidden-layer rows (collect --layers) are plotted against depth, not correlated")
        data = data[head_rows(data)].reset_index(drop=True)
    pooled, apart = pooling(data) if len(paths) > 1 else ({}, [])

    if target not in data.columns:
        numeric = [c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])]
        raise UsageError(
            f"--target {target!r}: no such column in {names} (numeric columns: {', '.join(map(str, numeric)) or 'none'})"
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
                f"--metric {', '.join(unknown)}: no such column in {names} (metric columns: {', '.join(available) or 'none'})"
            )
        non_numeric = [m for m in metrics if not pd.api.types.is_numeric_dtype(data[m])]
        if non_numeric:
            raise UsageError(f"--metric {', '.join(non_numeric)}: not a numeric column in {names}")
        chosen = list(dict.fromkeys(metrics))
    else:
        chosen = available
    if not chosen:
        raise DataError(
            f"{names}: no numeric metric columns to correlate with {target} (columns: {', '.join(str(c) for c in data.columns if c != 'source')})"
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
            _write_outputs(res, out, plots, corr, data, target, chosen, renamed, derived, notes, ours, depth=depth)
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
        _write_outputs(res, out, plots, corr, res.data, target, chosen, renamed, derived, notes, ours, depth=depth,
                       scatter=False)
    except OSError as e:
        raise DataError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return res


def _write_outputs(res, out, plots, corr, data, target, chosen, renamed, derived, notes, ours: bool, *,
                   depth=None, scatter: bool = True) -> None:
    """Stage every output of `run_analysis` and publish them together; then drop the stale plots of
    the earlier analysis in `out` (`ours`: there was one)."""
    from lcfast.io import staged

    with staged() as st:
        if plots:
            res.plots = make_plots(res, out, st) if scatter else []
            if depth is not None:
                res.plots += make_depth_plots(depth, [m for m in chosen if m in depth.columns], out, st)
        st.write_text(out / CORRELATIONS_FILE, corr.to_csv(index=False))
        st.write_text(out / DATA_FILE, data.to_csv(index=False))
        res.files = {
            "correlations": str(out / CORRELATIONS_FILE),
            "data": str(out / DATA_FILE),
            "summary": str(out / SUMMARY_FILE),
        }
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
