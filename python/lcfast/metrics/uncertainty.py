"""Standard errors of every metric from K disjoint folds of the data: `measure_folds`.

The point values are those of the merged statistics (what `measure_stats` gives on the totals);
each float metric M also gets `M_se`, the delete-one-fold jackknife standard error

    se(M) = sqrt((K − 1)/K · Σ_k (M_(k) − M̄)²),   M_(k) = M measured on all folds but k,

which needs no model of the metric (every NC metric is a smooth function of the class statistics,
where the jackknife is consistent) and, with folds made of whole windows, carries the correlation
of the positions inside a window. It is the SE at the size measured (all K folds), not at the
size of one fold. Why the folds are over windows, what the SE does and does not include (NC4 with
the train means held fixed, the kept-class set varying between replicates), and when it is None:
docs/metrics.md ("Precision").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from lcfast.errors import UsageError
from lcfast.metrics.measure import CANONICAL_KEYS, PAPER_KEYS, measure_all, profile_cdnv_power
from lcfast.stats.classstats import ClassStats
from lcfast.stats.ncc import NCCStats

__all__ = ["measure_folds", "se_keys", "result_keys", "BOOKKEEPING_KEYS", "merge_folds"]

#: counts that describe what was measured rather than a metric: no `_se`
BOOKKEEPING_KEYS = frozenset({
    "n_classes", "n_samples", "n_positions", "degenerate_pairs", "hits", "misses",
})


def _profile_keys(profile: str) -> tuple[str, ...]:
    return PAPER_KEYS if profile == "paper" else CANONICAL_KEYS


def se_keys(profile: str = "canonical") -> tuple[str, ...]:
    """The metric keys of `profile` that get a `_se` (every key but the bookkeeping counts and
    the counts of excluded pairs), in profile order."""
    profile_cdnv_power(profile, None)
    return tuple(k for k in _profile_keys(profile) if k not in BOOKKEEPING_KEYS and not k.endswith("_pairs"))


def result_keys(profile: str = "canonical") -> tuple[str, ...]:
    """Every key `measure_folds` / `measure_embeddings` returns for `profile`, in a stable order:
    the profile's keys, then `n_folds`, then one `M_se` per `se_keys(profile)` (CSV columns)."""
    return (*_profile_keys(profile), "n_folds", *(f"{k}_se" for k in se_keys(profile)))


def merge_folds(folds: Sequence[ClassStats], skip: int | None = None) -> ClassStats:
    """A new ClassStats holding the samples of every fold (but fold `skip`); the folds are not
    modified. Exact (ClassStats.merge moves sums between reference points exactly)."""
    idx = [i for i in range(len(folds)) if i != skip]
    out = folds[idx[0]].copy()
    for i in idx[1:]:
        out.merge(folds[i])
    return out


def _merge_ncc(ncc_folds: Sequence[NCCStats]) -> NCCStats:
    first = ncc_folds[0]
    out = NCCStats(first.n_classes, None, first.kept, None, all_classes=first.all_classes)
    out.meta = dict(first.meta)
    for f in ncc_folds:
        out.merge(f)
    return out


def _jackknife_se(full: float, reps: list[Any]) -> float | None:
    """Delete-one-group jackknife SE from the K leave-one-out values; None when K < 2 or a
    replicate is undefined (None) — a partial SE would look more precise than it is."""
    K = len(reps)
    if K < 2 or full is None or any(v is None for v in reps):
        return None
    m = math.fsum(reps) / K
    return math.sqrt((K - 1) / K * math.fsum((v - m) ** 2 for v in reps))


def _nc4_replicates(ncc_folds: Sequence[NCCStats]) -> list[float | None]:
    """Leave-one-val-fold-out agreements Σhits/Σtotals (kept labels); the train means stay fixed."""
    hits = [int(f.hits.sum()) for f in ncc_folds]
    tots = [int(f.totals.sum()) for f in ncc_folds]
    H, T = sum(hits), sum(tots)
    return [None if T - t == 0 else (H - h) / (T - t) for h, t in zip(hits, tots)]


def measure_folds(
    folds: Sequence[ClassStats],
    W: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    ncc_folds: Sequence[NCCStats] | None = None,
    min_count: int = 1,
    backend: str = "auto",
    *,
    profile: str = "canonical",
    cdnv_power: float | None = None,
    tol: float | None = None,
    decode=None,
    return_table: bool = False,
):
    """Every metric of `profile` on the merged folds, with a jackknife standard error per metric.

    folds: K ≥ 1 ClassStats over disjoint samples (same classes, dim, covariance setting); their
    merge is what is measured. ncc_folds: None, or L ≥ 1 NCCStats over disjoint folds of the
    validation positions, all decided with the merged train means (their merge is the NC4 input).
    Returns `measure_stats(merged, ...)`'s dict (point values; `n_positions` = every train
    position the folds hold) plus `n_folds` (K) and, for every key of `se_keys(profile)`,
    `M_se` (float, or None when K < 2, M is None, or M is undefined on some leave-one-out
    replicate). NC4's SE is the jackknife over the L validation folds with the means fixed.
    With `return_table=True`: (dict, per-token DataFrame of the merged statistics).
    Cost: K + 1 measurements (K + 1 pairwise sweeps) and K·(K − 1) ClassStats merges."""
    power = profile_cdnv_power(profile, cdnv_power)
    folds = list(folds)
    if not folds:
        raise UsageError("measure_folds: no folds given")
    for f in folds:
        if not isinstance(f, ClassStats):
            raise UsageError(f"measure_folds: every fold must be a ClassStats, got {type(f).__name__}")
    if ncc_folds is not None:
        ncc_folds = list(ncc_folds)
        if not ncc_folds or not all(isinstance(f, NCCStats) for f in ncc_folds):
            raise UsageError("measure_folds: ncc_folds must be a non-empty sequence of NCCStats (or None)")
    K = len(folds)
    merged = merge_folds(folds)
    ncc = _merge_ncc(ncc_folds) if ncc_folds is not None else None
    r, tab = measure_all(merged, W, b, ncc, min_count, backend, profile=profile, cdnv_power=power, tol=tol,
                         decode=decode, table=return_table)
    r["n_folds"] = K
    keys = se_keys(profile)
    reps: dict[str, list] = {k: [] for k in keys}
    if K >= 2:
        for i in range(K):
            loo = merge_folds(folds, skip=i)
            with warnings.catch_warnings():  # the full measurement already said what is degenerate
                warnings.simplefilter("ignore")
                try:
                    ri, _ = measure_all(loo, W, b, None, min_count, backend, profile=profile, cdnv_power=power,
                                        tol=tol, table=False)
                except Exception as e:  # e.g. no kept class in a replicate: no SE, the point value stands
                    from lcfast.errors import DataError

                    if not isinstance(e, DataError):
                        raise
                    ri = {}
            del loo
            for k in keys:
                reps[k].append(ri.get(k))
    for k in keys:
        r[f"{k}_se"] = _jackknife_se(r.get(k), reps[k]) if K >= 2 else None
    if "nc4_agreement" in keys:
        r["nc4_agreement_se"] = None
        if ncc_folds is not None and len(ncc_folds) >= 2:
            r["nc4_agreement_se"] = _jackknife_se(r.get("nc4_agreement"), _nc4_replicates(ncc_folds))
    out = {k: r.get(k) for k in result_keys(profile)}
    return (out, tab) if return_table else out
