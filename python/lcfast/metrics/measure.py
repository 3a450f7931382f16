"""Every NC metric from class statistics — `measure_stats` (saved/streamed state, what `lcfast
measure` calls); `measure_embeddings` (raw tensors, lcfast.metrics.embeddings) accumulates a
ClassStats and an NCCStats per fold, then takes the same code path. Definitions, directions and
how the two profiles relate: docs/metrics.md.

Two profiles, from the same one-pass statistics and one pairwise sweep / one NCC search:
* "canonical" (default): `CANONICAL_KEYS` — kept classes have n_c ≥ min_count; μ_G is the
  *unweighted* mean of the kept μ_c; m_c = μ_c − μ_G; means/variances are population statistics;
  accumulation in float64.
* "paper": `PAPER_KEYS` — the columns of the paper's own tables (rhubarbwu/linguistic-collapse's
  analyze.py over rhubarbwu/neural-collapse) under its names and definitions: cdnv with
  ‖μ_c − μ_c'‖⁴, interference as raw dot products ⟨m_c, m_c'⟩ over all pairs, per-class variances
  with ddof = 1 and pairwise ones with ddof = 0, NC4 over all C class means (hits / misses).

Degenerate input says so: one kept class, all kept means equal (Σ_B = 0 up to rounding, e.g.
identical features: NC1 ratios and nc2_norm_mean are None, never 0, which would read as perfect
collapse) and an all-zero or partly zero classifier each raise a `DegenerateInputWarning` naming
what is undefined (docs/bad-input.md).

Keys whose inputs are missing are None (no W → nc3_* / dual, simdot, simcos, dists; no NCCStats →
nc4 / hits, misses; no covariance → nc1_pinv), as are statistics that are undefined on the data
(fewer than 2 kept classes, no non-degenerate pair, a coefficient of variation with mean 0, the
log of a zero norm) — never inf/NaN.

Degenerate pairs (counted in `degenerate_pairs`, excluded from every pairwise mean except the raw
dot products): see `lcfast.stats.pairwise` — ‖m_c − m_c'‖² ≤ tol·(‖m_c‖² + ‖m_c'‖²),
‖m̂_c − m̂_c'‖² ≤ 2 tol, or a zero-norm m_c (‖m_c‖² ≤ tol·max‖m‖²), tol = 1e3·eps(float64) unless given.
Zero-norm m_c are also left out of nc2_lognorm_var (log 0) and, with zero-norm w_c, of the nc3 cosines.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lcfast import validate
from lcfast.backend import DEGENERATE_TOL
from lcfast.errors import DataError, UsageError
from lcfast.metrics.per_token import build_table, nearest_class
from lcfast.metrics.profiles import MetricProfile
from lcfast.stats.classstats import ClassStats
from lcfast.stats.inputs import as_tensor
from lcfast.stats.ncc import NCCStats
from lcfast.stats.pairwise import cross_gram_sums, etf_error, pairwise_sweep

__all__ = ["CANONICAL_KEYS", "PAPER_KEYS", "PROFILES", "DegenerateInputWarning", "profile_cdnv_power",
           "measure_stats", "measure_all", "per_token_table"]

F64 = torch.float64

PROFILES = tuple(p.value for p in MetricProfile)


class DegenerateInputWarning(UserWarning):
    """The statistics are degenerate for some metrics (one kept class, all class means equal, a zero
    classifier): those metrics are None, and this warning says why (`lcfast measure` shows it as a note)."""

CANONICAL_KEYS = (
    "n_classes",
    "n_samples",
    "n_positions",
    "nc1_cdnv",
    "nc1_cdnv_debiased",
    "nc1_cdnv_debiased_nonpositive_pairs",
    "nc1_trace_ratio",
    "nc1_trace_ratio_debiased",
    "nc1_pinv",
    "nc2_norm_mean",
    "nc2_norm_cov",
    "nc2_lognorm_var",
    "nc2_interference_mean",
    "nc2_interference_var",
    "nc2_etf_error",
    "gnc2_log_mean",
    "gnc2_log_var",
    "nc3_dual_cos_mean",
    "nc3_dual_cos_var",
    "unc3",
    "nc3_dual_error",
    "nc4_agreement",
    "degenerate_pairs",
)

#: profile="paper": the columns of the paper's lc-2024_10_24 table (docs/metrics.md), plus the
#: same bookkeeping as the canonical profile (n_classes, n_samples, n_positions, degenerate_pairs)
PAPER_KEYS = (
    "n_classes",
    "n_samples",
    "n_positions",
    "cdnv",
    "cdnv_debiased",
    "cdnv_debiased_nonpositive_pairs",
    "norms_mean",
    "norms_var",
    "norms_log_mean",
    "norms_log_var",
    "etf_error",
    "interfere_mean",
    "interfere_var",
    "log_kern_mean",
    "log_kern_var",
    "dual_error",
    "simdot_mean",
    "simdot_var",
    "simcos_mean",
    "simcos_var",
    "dists_mean",
    "dists_var",
    "hits",
    "misses",
    "degenerate_pairs",
)


def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _mean_var1(x: torch.Tensor) -> tuple[float | None, float | None]:
    """(mean, sample variance with ddof = 1) of a 1-D tensor; None where undefined."""
    n = x.numel()
    mean = _finite(x.mean()) if n else None
    var = _finite(x.var(correction=1)) if n >= 2 else None
    return mean, var


def profile_cdnv_power(profile: str | MetricProfile, cdnv_power: float | None) -> float:
    """The CDNV exponent a profile uses: `cdnv_power`, or the profile's default (canonical 1,
    paper 2 — the only one it accepts). UsageError for an unknown profile or a conflicting power."""
    return MetricProfile.parse(profile).cdnv_power(cdnv_power)


def _cv(x: torch.Tensor) -> float | None:
    """Coefficient of variation std/mean (population std); None when empty or the mean is 0."""
    if x.numel() == 0:
        return None
    m = float(x.mean())
    return float(x.std(correction=0)) / m if m != 0 else None


def _check_classifier(W, b, C: int, d: int):
    if W is None:
        if b is not None:
            raise UsageError("measure: a bias b was given without the classifier W")
        return None, None
    if W.dim() != 2 or tuple(W.shape) != (C, d):
        raise UsageError(f"measure: W must be [{C}, {d}] (classes × feature dim), got {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise DataError("measure: the classifier W contains non-finite values")
    if b is not None:
        if b.dim() != 1 or b.shape[0] != C:
            raise UsageError(f"measure: b must be [{C}], got {tuple(b.shape)}")
        if not bool(torch.isfinite(b).all()):
            raise DataError("measure: the bias b contains non-finite values")
    return W, b


def measure_all(
    stats: ClassStats | str | os.PathLike,
    W: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    ncc: NCCStats | str | os.PathLike | None = None,
    min_count: int = 1,
    backend: str = "auto",
    *,
    profile: str = "canonical",
    cdnv_power: float | None = None,
    tol: float | None = None,
    decode: Callable[[int], str] | None = None,
    table: bool = True,
):
    """(metrics dict, per-token DataFrame or None) with one pairwise sweep for both.
    profile "canonical" → CANONICAL_KEYS, "paper" → PAPER_KEYS (docs/metrics.md); cdnv_power
    defaults to 1 (canonical) / 2 (paper, the only power it accepts)."""
    profile = MetricProfile.parse(profile)
    cdnv_power = profile.cdnv_power(cdnv_power)
    if isinstance(stats, (str, os.PathLike)):
        stats = ClassStats.load(stats)
    if not isinstance(stats, ClassStats):
        raise UsageError(f"measure: stats must be a ClassStats or a path to one, got {type(stats).__name__}")
    if isinstance(ncc, (str, os.PathLike)):
        ncc = NCCStats.load(ncc)
    W, b = as_tensor(W, "measure: W"), as_tensor(b, "measure: b")
    min_count = validate.integer("min_count", min_count, min=1)
    cdnv_power = validate.number("cdnv_power", cdnv_power, min=0, min_open=True, max=validate.CDNV_POWER_MAX)
    tol = DEGENERATE_TOL if tol is None else validate.number("tol", tol, min=0)
    W, b = _check_classifier(W, b, stats.n_classes, stats.dim)
    k = _kept_classes(stats, ncc, min_count, tol)
    if profile is MetricProfile.PAPER:
        r, ps, dual = _paper_metrics(k, W, ncc, cdnv_power, backend, tol)
    else:
        r, ps, dual = _canonical_metrics(stats, k, W, ncc, min_count, cdnv_power, backend, tol)
    # every train position the statistics saw, kept class or not (n_samples: kept ones only)
    r["n_positions"] = int(k.counts.sum())
    tab = None
    if table:
        near = nearest_class(k.M, k.var, cdnv_power, tol)
        tab = build_table(k.ids, k.counts, k.norms, k.var, dual, ps, ncc, decode, near)
    return r, tab


@dataclass
class _Kept:
    """The kept classes (n_c ≥ min_count) of one measurement, centred: what every metric reads.
    ids / counts / mask on the CPU (counts and mask over all classes), the rest on the stats' device."""

    ids: torch.Tensor  # int64 [C] kept class ids
    counts: torch.Tensor  # int64 [C_all]
    mask: torch.Tensor  # bool [C_all]
    ids_d: torch.Tensor  # ids on the device
    mu: torch.Tensor  # [C, d] class means μ_c
    var: torch.Tensor  # [C] σ²_c
    n: torch.Tensor  # [C] float64 n_c
    N: float  # Σ n_c
    M: torch.Tensor  # [C, d] m_c = μ_c − μ_G (unweighted μ_G)
    n2: torch.Tensor  # [C] ‖m_c‖²
    norms: torch.Tensor  # [C] ‖m_c‖
    nonzero: torch.Tensor  # [C] bool, ‖m_c‖² > tol · max ‖m‖²

    @property
    def C(self) -> int:
        return int(self.ids.numel())


def _kept_classes(stats: ClassStats, ncc: NCCStats | None, min_count: int, tol: float) -> _Kept:
    """Select and centre the kept classes; DataError when there are none, and an NCCStats must
    have been accumulated over the same classes and the same kept set."""
    counts = stats.counts.cpu()
    kept = counts >= min_count
    ids = kept.nonzero().squeeze(1)
    C = int(ids.numel())
    if C == 0:
        raise DataError(f"measure: no class has at least min_count={min_count} samples (max count {int(counts.max())})")
    if ncc is not None:
        if not isinstance(ncc, NCCStats):
            raise UsageError(f"measure: ncc must be an NCCStats or a path to one, got {type(ncc).__name__}")
        if ncc.n_classes != stats.n_classes:
            raise DataError(f"measure: NCC decisions are over {ncc.n_classes} classes, "
                            f"the class statistics over {stats.n_classes}")
        if not torch.equal(ncc.kept.cpu(), kept):
            raise UsageError(
                f"measure: the NC4 decisions were made with a different kept-class set ({int(ncc.kept.sum())} classes) "
                f"than min_count={min_count} gives ({C}); collect the validation pass with the same min_count"
            )
    dev = stats.means.device
    ids_d = ids.to(dev)
    mu = stats.means[ids_d]
    n = counts[ids].to(F64).to(dev)
    M = mu - mu.mean(0)
    n2 = (M * M).sum(1)
    scale = float(n2.max())
    nonzero = n2 > tol * scale if scale > 0 else torch.zeros(C, dtype=torch.bool, device=dev)
    return _Kept(ids=ids, counts=counts, mask=kept, ids_d=ids_d, mu=mu, var=stats.variances[ids_d], n=n,
                 N=float(n.sum()), M=M, n2=n2, norms=n2.sqrt(), nonzero=nonzero)


def _canonical_metrics(stats, k: _Kept, W, ncc, min_count, cdnv_power, backend, tol):
    """CANONICAL_KEYS (docs/metrics.md); returns (dict, sweep, dual cosines for the table).
    Degenerate input is said (a DegenerateInputWarning each), never reported as 0."""
    C, N = k.C, k.N
    r: dict[str, Any] = {key: None for key in CANONICAL_KEYS}
    r["n_classes"] = C
    r["n_samples"] = int(round(N))
    trW = float((k.n * k.var).sum()) / N
    trB = float(k.n2.sum()) / C
    # Σ_B = 0 up to rounding, relative to the size of the means themselves (all kept means equal,
    # e.g. identical features): the NC1 ratios are 0/0 or x/0, not "perfect collapse"
    sb_zero = C < 2 or trB <= tol * float((k.mu * k.mu).sum(1).mean())
    reasons: list[str] = []
    if C < 2:
        reasons.append(f"a single kept class (min_count={min_count}): the between-class metrics (NC1 ratios, "
                       "CDNV, NC2, nc3_dual_error) are undefined and reported as None")
    elif sb_zero:
        reasons.append(f"all {C} kept class means are equal "
                       f"(Σ_B = 0{', and Σ_W = 0: the features are identical' if trW == 0 else ''}): "
                       "nc1_trace_ratio, nc1_pinv, nc2_norm_mean and the pairwise metrics are undefined and "
                       "reported as None, not as perfect collapse")

    # NC1
    r["nc1_trace_ratio"] = trW / trB if not sb_zero else None
    if not sb_zero:
        r["nc1_trace_ratio_debiased"] = _trace_ratio_debiased(k)
    if not sb_zero:
        r["nc1_pinv"] = _nc1_pinv(stats, k)

    # pairwise (NC1 cdnv, NC2 interference, GNC2)
    ps = None
    r["degenerate_pairs"] = 0
    r["nc1_cdnv_debiased_nonpositive_pairs"] = 0
    if C >= 2:
        ps = pairwise_sweep(k.M, k.var, cdnv_power=cdnv_power, backend=backend, tol=tol, counts=k.n)
        r["degenerate_pairs"] = int(ps.degenerate)
        r["nc1_cdnv_debiased"], r["nc1_cdnv_debiased_nonpositive_pairs"] = _debiased(ps)
        if ps.cdnv.n > 0:
            r["nc1_cdnv"] = ps.cdnv.mean
            r["nc2_interference_mean"] = ps.cos.mean
            r["nc2_interference_var"] = ps.cos.var
            r["gnc2_log_mean"] = ps.logk.mean
            r["gnc2_log_var"] = ps.logk.var
        r["nc2_etf_error"] = etf_error(ps.gram_sum, ps.gram_sq_sum, ps.gram_trace, C)

    # NC2 norms
    r["nc2_norm_mean"] = float(k.norms.mean()) if not sb_zero else None
    r["nc2_norm_cov"] = _cv(k.norms)
    if bool(k.nonzero.any()):
        r["nc2_lognorm_var"] = float(k.norms[k.nonzero].log().var(correction=0))

    dual = _nc3(r, k, W, reasons) if W is not None else None
    if ncc is not None:
        r["nc4_agreement"] = ncc.agreement
    for why in reasons:
        warnings.warn(f"measure: {why}", DegenerateInputWarning, stacklevel=4)
    return r, ps, dual


def _trace_ratio_debiased(k: _Kept) -> float | None:
    """Tr Σ_W / Tr Σ_B with both traces unbiased (docs/metrics.md, "Precision"): Σ_c n_c s²_c / N with
    s²_c = σ²_c n_c/(n_c − 1), and (Σ_c ‖m_c‖² − (1 − 1/C) Σ_c s²_c/n_c)/C — E‖m̂_c‖² exceeds
    ‖m_c‖² by the noise of the means. None when a kept class has n_c < 2 (no variance estimate) or
    the corrected Tr Σ_B is not positive (the between-class spread is all noise)."""
    if bool((k.n < 2).any()):
        return None
    s2 = k.var * k.n / (k.n - 1)
    trW = float((k.n * s2).sum()) / k.N
    trB = (float(k.n2.sum()) - (1 - 1 / k.C) * float((s2 / k.n).sum())) / k.C
    return trW / trB if trB > 0 else None


def _debiased(ps) -> tuple[float | None, int]:
    """(debiased CDNV mean or None when no pair has a positive corrected distance, the count of
    non-degenerate pairs whose corrected distance is not positive) — docs/metrics.md."""
    deb = ps.cdnv_debiased
    return (_finite(deb.mean) if deb is not None and deb.n > 0 else None), int(ps.nonpositive)


def _nc1_pinv(stats: ClassStats, k: _Kept) -> float | None:
    """tr(Σ_W Σ_B⁺)/C over the kept classes; None without the covariance or when it lacks a kept class."""
    S = stats.within_scatter()
    if S is None:
        return None
    covered = stats.cov_classes.cpu() if stats.cov_classes is not None else k.counts > 0
    extra = covered & ~k.mask
    if bool(extra.any()) and bool((stats.variances.cpu()[extra] > 0).any()):
        warnings.warn(
            "nc1_pinv: the covariance also covers classes below min_count (their within-class scatter "
            "is included); accumulate with ClassStats(cov_classes=kept) for the exact kept-only Σ_W",
            stacklevel=4,
        )
    if bool((k.mask & ~covered).any()):
        return None  # Σ_W lacks kept classes: cannot be computed
    SW = S / k.N
    SB = (k.M.T @ k.M) / k.C
    SBp = torch.linalg.pinv(SB, hermitian=True)
    return float((SW * SBp).sum()) / k.C


def _nc3(r: dict, k: _Kept, W: torch.Tensor, reasons: list[str]) -> torch.Tensor:
    """The canonical NC3 keys into `r` (zero classifier rows noted in `reasons`); returns the dual
    cosines cos(w_c, m_c) for the per-token table."""
    C = k.C
    Wk = W.to(k.M.device, F64)[k.ids_d]
    wn = Wk.norm(dim=1)
    good = (wn > 0) & k.nonzero
    dual = _dual_cos(Wk, k.M, wn, k.norms, good)
    cw = dual[good]
    if cw.numel():
        r["nc3_dual_cos_mean"] = float(cw.mean())
        r["nc3_dual_cos_var"] = float(cw.var(correction=0))
        r["unc3"] = _cv(cw)
    if C >= 2:
        asum, asq, atr = cross_gram_sums(Wk, k.M)
        r["nc3_dual_error"] = etf_error(asum, asq, atr, C)
    zero_w = int((wn == 0).sum())
    if zero_w == C:
        reasons.append("the classifier W is zero for every kept class: the NC3 metrics are undefined (None)")
    elif zero_w:
        reasons.append(f"{zero_w} of {C} kept classes have a zero classifier row w_c: left out of the NC3 cosines")
    return dual


def _dual_cos(Wk: torch.Tensor, M: torch.Tensor, wn: torch.Tensor, norms: torch.Tensor, good: torch.Tensor):
    """cos(w_c, m_c) on `good` classes, NaN elsewhere (the per-token table's dual_cos)."""
    dual = torch.full((M.shape[0],), float("nan"), dtype=F64, device=M.device)
    dual[good] = (Wk * M).sum(1)[good] / (wn[good] * norms[good])
    return dual


def _paper_metrics(k: _Kept, W, ncc, cdnv_power, backend, tol):
    """PAPER_KEYS from the kept classes' centred means M, norms ‖m_c‖ and variances σ²_c: one
    pairwise sweep (cdnv at power 2, log kernel, raw dot products), O(C·d) per-class vectors, and
    the all-class NC4 decisions of `ncc`. Returns (dict, sweep, dual cosines for the table)."""
    ids_d, M, norms, var, N = k.ids_d, k.M, k.norms, k.var, k.N
    C = M.shape[0]
    r: dict[str, Any] = {k: None for k in PAPER_KEYS}
    r["n_classes"] = C
    r["n_samples"] = int(round(N))
    # per-class vectors: mean and sample variance (ddof = 1), as the paper's Tensor.var()
    r["norms_mean"], r["norms_var"] = _mean_var1(norms)
    if bool((norms > 0).all()):  # the paper's log of a zero norm is −inf: left None here
        r["norms_log_mean"], r["norms_log_var"] = _mean_var1(norms.log())
    ps = None
    r["degenerate_pairs"] = 0
    r["cdnv_debiased_nonpositive_pairs"] = 0
    if C >= 2:
        ps = pairwise_sweep(M, var, cdnv_power=cdnv_power, backend=backend, tol=tol, raw_dot=True, counts=k.n)
        r["degenerate_pairs"] = int(ps.degenerate)
        r["cdnv_debiased"], r["cdnv_debiased_nonpositive_pairs"] = _debiased(ps)
        if ps.cdnv.n > 0:  # pairwise statistics: mean and population variance over pairs c < c'
            r["cdnv"] = _finite(ps.cdnv.mean)
            r["log_kern_mean"] = _finite(ps.logk.mean)
            r["log_kern_var"] = _finite(ps.logk.var)
        if ps.dot is not None and ps.dot.n > 0:
            r["interfere_mean"] = _finite(ps.dot.mean)
            r["interfere_var"] = _finite(ps.dot.var)
        r["etf_error"] = etf_error(ps.gram_sum, ps.gram_sq_sum, ps.gram_trace, C)
    dual = None
    if W is not None:
        Wk = W.to(M.device, F64)[ids_d]
        wn = Wk.norm(dim=1)
        dots = (Wk * M).sum(1)
        r["simdot_mean"], r["simdot_var"] = _mean_var1(dots)
        both = (wn > 0) & (norms > 0)
        # a zero vector has cosine 0 with anything and unit-normalises to 0 (as the paper's
        # cosine_similarity and x / (‖x‖ + eps) do), so every kept class counts
        cos = torch.where(both, dots / torch.where(both, wn * norms, 1.0), 0.0)
        r["simcos_mean"], r["simcos_var"] = _mean_var1(cos)
        wh = Wk / torch.where(wn > 0, wn, 1.0)[:, None]
        mh = M / torch.where(norms > 0, norms, 1.0)[:, None]
        r["dists_mean"], r["dists_var"] = _mean_var1((wh - mh).norm(dim=1))
        if C >= 2:
            asum, asq, atr = cross_gram_sums(Wk, M)
            r["dual_error"] = etf_error(asum, asq, atr, C)
        dual = _dual_cos(Wk, M, wn, norms, both)
    if ncc is not None:
        if ncc.hits_all is None:
            why = ncc.meta.get("no_all_classes")  # set where the all-C search cannot exist (--classes top:K)
            warnings.warn(
                f"hits/misses left empty: {why}" if why else
                "hits/misses: these NC4 decisions were made over the kept class means only (collected by an "
                "older lcfast); the paper's NC4 searches all C means: recollect the val pass "
                "(lcfast collect --restart) for hits/misses",
                stacklevel=3,
            )
        else:
            idc = ids_d.cpu()
            hits = int(ncc.hits_all[idc].sum())
            r["hits"], r["misses"] = hits, int(ncc.totals[idc].sum()) - hits
    return r, ps, dual


def measure_stats(
    stats: ClassStats | str | os.PathLike,
    W: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    ncc: NCCStats | str | os.PathLike | None = None,
    min_count: int = 1,
    backend: str = "auto",
    *,
    profile: str = "canonical",
    cdnv_power: float | None = None,
    tol: float | None = None,
) -> dict:
    """Every metric of `profile` (docs/metrics.md) from accumulated class statistics (a ClassStats
    or the path of a saved one) and, for NC4, an NCCStats accumulated with the same kept classes
    (profile "paper": with `all_classes=True`, for hits/misses).
    `cdnv_power`: exponent p of the distance in (σ²_c + σ²_c')/(2 (‖μ_c − μ_c'‖²)^p), default 1
    (canonical nc1_cdnv); the paper profile's cdnv is p = 2. `b` is accepted for symmetry with
    measure_embeddings (NC4 decisions already include it). Returns {key: float | int | None}."""
    r, _ = measure_all(stats, W, b, ncc, min_count, backend, profile=profile, cdnv_power=cdnv_power, tol=tol,
                       table=False)
    return r


def per_token_table(
    stats: ClassStats | str | os.PathLike,
    W: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    ncc: NCCStats | str | os.PathLike | None = None,
    min_count: int = 1,
    decode: Callable[[int], str] | None = None,
    backend: str = "auto",
    *,
    cdnv_power: float = 1.0,
    tol: float | None = None,
):
    """The per-token DataFrame (columns: lcfast.metrics.per_token) for a ClassStats or a saved
    one's path. (`measure_all` returns the metrics and this table from one sweep.)"""
    _, tab = measure_all(stats, W, b, ncc, min_count, backend, cdnv_power=cdnv_power, tol=tol, decode=decode,
                         table=True)
    return tab
