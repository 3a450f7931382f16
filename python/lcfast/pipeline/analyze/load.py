"""Reading measure and paper tables into one table: which columns are metrics, the paper's columns
under the canonical keys where they are the same quantity, pooling several files (like with like:
docs/metrics.md), and the rows of the LM head versus the hidden layers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lcfast.errors import DataError, UsageError

# Columns that describe a model or its outcome, never analysed as metrics (any may be the target).
META_COLUMNS = {
    "model", "checkpoint", "source", "run", "path", "name", "n_params", "params", "layers",
    "width", "heads", "context", "vocab_size", "dim", "epochs", "epoch", "seed", "step", "steps",
    "lr", "batch_size", "tokens", "train_tokens", "val_tokens", "variant", "cdnv_power", "exact",
    "layer", "head", "revision", "commit",
}
OUTCOME_COLUMNS = {"val_loss", "val_acc", "perplexity", "train_loss", "train_acc", "val_ppl", "collect_val_loss"}
# Bookkeeping counts, not collapse metrics (hits/misses and matches/misses become hit rates).
BOOKKEEPING_COLUMNS = {"n_classes", "n_samples", "degenerate_pairs", "min_count", "hits", "misses", "matches",
                       "profile"}

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


def input_labels(paths: list[Path]) -> list[str]:
    """What each input is called in `source` and the notes: its file name, or as much of its path as
    tells it apart from another input of the same name (A/measurements.csv, B/measurements.csv)."""
    out = []
    for p in paths:
        others = [q for q in paths if q.name == p.name and q.resolve() != p.resolve()]
        k = 1
        while others and k < len(p.parts) and any(q.parts[-k:] == p.parts[-k:] for q in others):
            k += 1
        out.append(str(Path(*p.parts[-k:])) if others else p.name)
    return out


#: what makes two rows the same row: one per (model, checkpoint), per layer and profile where given
KEY_COLUMNS = ("model", "checkpoint", "layer", "profile")


def load_tables(csv_paths, notes: list[str] | None = None) -> tuple[pd.DataFrame, dict, list[str]]:
    """Read and normalise CSVs into one table (one row per (model, checkpoint) where known).

    A row that several inputs hold (same model, checkpoint, layer, profile) becomes one row, its
    columns taken from whichever input has them; inputs that disagree on a value refuse (DataError
    naming the row, the column and both files): pooling them would count one model twice.

    Returns (table, renamed {file: {paper column: canonical key}}, derived descriptions).
    """
    notes = notes if notes is not None else []
    if isinstance(csv_paths, (str, Path)):
        csv_paths = [csv_paths]
    paths = [Path(p) for p in csv_paths]
    if not paths:
        raise UsageError("analyze: give at least one CSV file")
    labels = input_labels(paths)
    frames, renamed_all, derived_all = [], {}, []
    by_source: dict[str, set[str]] = {}  # columns holding values, per file (what `pooling` reports)
    for i, (p, label) in enumerate(zip(paths, labels)):
        df = _read_csv(p)
        if len(df.columns) == 0:
            raise DataError(f"{p}: no columns")
        renamed = _renames(df)
        df = df.rename(columns=renamed)
        tag = f"{label}: " if len(paths) > 1 else ""
        df, derived = _derive(df, tag)
        if _parse_paper_models(df):
            derived.append(f"{tag}model/layers/width/epochs/checkpoint/epoch parsed from paper ids 'LLxWWWW_EEv@k'")
        df["source"] = label
        by_source.setdefault(label, set()).update(str(c) for c in df.columns if df[c].notna().any())
        if renamed:
            renamed_all[str(p)] = dict(renamed)
        derived_all.extend(derived)
        frames.append(df.assign(_input=i))
    if len(frames) == 1:
        data = frames[0].drop(columns=["_input"])
        data.attrs["columns_by_source"] = by_source
        return data, renamed_all, derived_all
    data = pd.concat(frames, ignore_index=True, sort=False)
    if {"model", "checkpoint"} <= set(data.columns):
        names = [c for c in KEY_COLUMNS if c in data.columns]
        key = data[names[0]].astype(str)
        for c in names[1:]:
            key = key + "\x00" + data[c].astype(str)
        dup = key.duplicated(keep=False) & data.groupby(key)["_input"].transform("nunique").gt(1)
        if dup.any():
            _refuse_conflicts(data[dup], key[dup], names, paths)
            n_keys = key[dup].nunique()
            rows = data[dup].assign(source=data[dup].groupby(key[dup])["source"].transform(
                lambda s: "+".join(dict.fromkeys(s))))
            merged = rows.groupby(key[dup], sort=False).first()
            merged.index = key[dup].drop_duplicates().index  # each merged row where it first appeared
            data = pd.concat([data[~dup], merged]).sort_index().reset_index(drop=True)
            notes.append(f"{n_keys} ({', '.join(names)}) rows appear in several files and were merged")
    data = data.drop(columns=["_input"])
    data.attrs["columns_by_source"] = by_source
    return data, renamed_all, derived_all


def _refuse_conflicts(rows: pd.DataFrame, key: pd.Series, names: list[str], paths: list[Path]) -> None:
    """DataError for the first row that two inputs give with different values in a column both have
    (numbers equal up to float32 round-off, as the paper's two tables give cdnv, agree)."""
    for c in rows.columns:
        if c in ("source", "_input") or c in names:
            continue
        col = rows[c]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            g = col.groupby(key)
            lo, hi = g.min().to_numpy(dtype=np.float64), g.max().to_numpy(dtype=np.float64)
            ok = np.isfinite(lo) & np.isfinite(hi)
            bad = ~np.isclose(lo, hi, rtol=1e-5, atol=1e-12) & ok
            bad_keys = g.min().index[bad]
        else:
            n = col.astype(object).where(col.notna()).map(lambda v: None if v is None else str(v))
            counts = n.groupby(key).nunique(dropna=True)
            bad_keys = counts.index[counts > 1]
        if len(bad_keys) == 0:
            continue
        group = rows[key == bad_keys[0]]
        vals = group[c].dropna()
        first = vals.index[0]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            other = (vals.astype(np.float64) - float(vals[first])).abs().idxmax()
        else:
            other = next(j for j in vals.index if str(vals[j]) != str(vals[first]))
        a, b = paths[int(group.loc[first, "_input"])], paths[int(group.loc[other, "_input"])]
        desc = ", ".join(f"{n} {_shown(group.loc[first, n])}" for n in names)
        raise DataError(f"{b}: row ({desc}) is also in {a} with other values ({c}: {_shown(vals[first])} vs "
                        f"{_shown(vals[other])}); give each row once")


def _shown(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v.item() if isinstance(v, np.generic) else v)


def metric_columns(data: pd.DataFrame, target: str) -> list[str]:
    """Numeric columns analysed as metrics (not meta, outcome, bookkeeping, or the target)."""
    out = []
    for c in data.columns:
        if c == target or c in META_COLUMNS or c in OUTCOME_COLUMNS or c in BOOKKEEPING_COLUMNS:
            continue
        if str(c).endswith(("_seconds", "_time")):
            continue
        # the precision of a metric (its SE, the doubling verdict, pairs left out, positions and
        # folds measured) describes the measurement, it is not a collapse metric of its own
        if str(c).endswith(("_se", "_stable", "_nonpositive_pairs")) or c in ("n_positions", "n_folds"):
            continue
        s = data[c]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            continue
        if s.notna().any():
            out.append(c)
    return out


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
