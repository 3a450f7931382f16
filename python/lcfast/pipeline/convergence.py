"""Precision and convergence of the measured metrics, from the K folds of a collection.

`measure_with_precision(folds, …)` measures every metric on the merged folds with
`lcfast.metrics.uncertainty.measure_folds` (point value, `n_positions`, `M_se`), then on nested
random subsamples of the train windows: the first K/2, K/4, …, 1 folds (the folds are a seeded
random deal of the windows, so the first m of them are a uniform random m/K of the windows, and
each level contains the next smaller one). Each level is measured the same way (its value and,
with ≥ 2 folds, its jackknife SE over its own folds) and becomes rows of convergence.csv:

    model, checkpoint, layer, metric, n_positions, value, se

`M_stable` is True when the last doubling (the first ⌊K/2⌋ folds → all K) moved M by less than
2·M_se, False when it moved more, None when it cannot be said (K < 2, or M or its SE undefined).
NC4 appears at the full size only: its decisions were made with the means of all the train
positions (collect's one val pass), so a smaller train subsample has no NC4 of its own.

`needed_positions(levels)` reads convergence rows back: per metric, the smallest level from which
every further doubling moved the metric by less than 2·SE of the larger level (what `lcfast
analyze`'s report says as "roughly how many positions it needs").
"""

from __future__ import annotations

import warnings

from lcfast.errors import DataError

CONVERGENCE_FILE = "convergence.csv"
CONVERGENCE_COLUMNS = ["model", "checkpoint", "layer", "metric", "n_positions", "value", "se"]
#: a doubling that moved a metric by less than this many of its SEs counts as stable
STABLE_SES = 2.0


def row_keys(profile: str = "canonical") -> tuple[str, ...]:
    """The metric columns of a measurements.csv row: `result_keys(profile)` (values, n_positions,
    n_folds, M_se), then `M_stable` for every key with an SE."""
    from lcfast.metrics.uncertainty import result_keys, se_keys

    return (*result_keys(profile), *(f"{k}_stable" for k in se_keys(profile)))


def _levels(K: int) -> list[int]:
    """Fold counts of the nested subsamples below all K folds: ⌊K/2⌋, ⌊K/4⌋, …, 1."""
    out, m = [], K // 2
    while m >= 1:
        out.append(m)
        m //= 2
    return out


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def measure_with_precision(folds, W, b, ncc_folds, min_count: int, backend: str, *, profile: str = "canonical",
                           cdnv_power: float | None = None, decode=None, table: bool = False):
    """(metrics dict with `row_keys(profile)`, per-token table or None, convergence rows) of K
    ClassStats folds (and L val NCCStats folds or None). Convergence rows: dicts with metric,
    n_positions, value, se, from the largest level (all folds) down."""
    from lcfast.metrics.uncertainty import measure_folds, se_keys

    keys = se_keys(profile)
    full, tab = measure_folds(folds, W, b, ncc_folds, min_count, backend, profile=profile, cdnv_power=cdnv_power,
                              decode=decode, return_table=True) if table else (
        measure_folds(folds, W, b, ncc_folds, min_count, backend, profile=profile, cdnv_power=cdnv_power), None)
    levels = [(len(folds), full)]
    for m in _levels(len(folds)):
        with warnings.catch_warnings():  # the full measurement already said what is degenerate
            warnings.simplefilter("ignore")
            try:
                r = measure_folds(folds[:m], W, b, None, min_count, backend, profile=profile, cdnv_power=cdnv_power)
            except DataError:  # e.g. fewer than 2 kept classes in a small subsample: that level is left out
                continue
        levels.append((m, r))
    half = levels[1][1] if len(levels) > 1 and levels[1][0] == len(folds) // 2 else None
    out = dict(full)
    for k in keys:
        v, se, h = full.get(k), full.get(f"{k}_se"), (half or {}).get(k)
        out[f"{k}_stable"] = (bool(abs(v - h) < STABLE_SES * se)
                              if _is_num(v) and _is_num(se) and _is_num(h) else None)
    rows = []
    for _, r in levels:
        for k in keys:
            v = r.get(k)
            if _is_num(v):
                rows.append({"metric": k, "n_positions": r.get("n_positions"), "value": float(v),
                             "se": r.get(f"{k}_se")})
    return out, tab, rows


def needed_positions(rows) -> dict[str, dict]:
    """Per metric of convergence rows of ONE (model, checkpoint, layer), ascending sizes:
    {"n_max": largest size, "stable": whether the last doubling moved it < 2 SE (None: unknown),
    "needs": the smallest size from which every doubling moved it < 2 SE of the larger level
    (None when even the last did not)}."""
    by: dict[str, list] = {}
    for r in rows:
        by.setdefault(r["metric"], []).append(r)
    out = {}
    for k, rs in by.items():
        rs = sorted(rs, key=lambda r: r["n_positions"])
        if len(rs) < 2:
            continue
        ok = []
        for small, big in zip(rs, rs[1:]):
            se = big.get("se")
            ok.append(bool(abs(big["value"] - small["value"]) < STABLE_SES * se) if _is_num(se) else None)
        needs = None
        for i in range(len(ok) - 1, -1, -1):  # walk down while every doubling above was stable
            if ok[i] is not True:
                break
            needs = rs[i]["n_positions"]
        out[k] = {"n_max": rs[-1]["n_positions"], "stable": ok[-1], "needs": needs}
    return out


def convergence_frame(rows: list[dict]):
    """convergence.csv's DataFrame (CONVERGENCE_COLUMNS) of convergence rows."""
    import pandas as pd

    df = pd.DataFrame(rows, columns=CONVERGENCE_COLUMNS)
    df["layer"] = df["layer"].astype("Int64")
    df["n_positions"] = df["n_positions"].astype("Int64")
    return df


__all__ = ["measure_with_precision", "row_keys", "needed_positions", "convergence_frame", "CONVERGENCE_FILE",
           "CONVERGENCE_COLUMNS", "STABLE_SES"]
