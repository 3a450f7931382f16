"""Fused pairwise statistics over the unordered kept-class pairs c < c′, never materialising C×C.

Launcher: :func:`pairwise_triton` (torch twin: ``lcfast.stats.pairwise.pairwise_torch``); returns a
:class:`lcfast.backend.PairwiseSums`.

Strategy
--------
* Tiles: the C×C Gram matrix G = M Mᵀ is cut into BLOCK×BLOCK tiles; only the upper triangle of
  tiles (j-tile ≥ i-tile) is launched, one program per tile, through a host-built (i-tile, j-tile)
  table ordered in GROUP×GROUP super-tiles so that programs running at the same time share their
  M row blocks in L2 (M is 200 MB in fp32 at C = 50,257, d = 1,024: far larger than L2).
* Phase 1 (``_pairwise_kernel``): each program accumulates its Gram tile with ``tl.dot`` over d
  (fp32 accumulation) and reduces it in registers: ‖m_c − m_c′‖² = ‖m_c‖² + ‖m_c′‖² − 2G (squared
  norms precomputed in float64 from the very vectors the dot product sees), ‖m̂_c − m̂_c′‖² =
  2 − 2G/(‖m_c‖‖m_c′‖), CDNV (σ²_c + σ²_c′)/(2 (‖m_c − m_c′‖²)^p), cos = 1 − ‖m̂_c − m̂_c′‖²/2,
  the log kernel −½·log‖m̂_c − m̂_c′‖² = log(1/‖m̂_c − m̂_c′‖), and G². Element values are float32
  (the Gram entries carry fp32 rounding anyway); every sum is float64 (row sums of ≤ BLOCK values
  in float32, then float64).
* Output: per program a row of a P×_NPART float64 table (columns COL_*) — the count of valid pairs, and for each of
  cdnv / cos / logk the sum and the M2 about the tile's own mean; the degenerate-pair count,
  Σ_{c<c′} G² and the number of flagged pairs (below); with ``raw_dot=True`` (constexpr DOTS) the
  count, sum and M2 of the raw Gram entries G = ⟨m_c, m_c′⟩ over every pair c < c′ of the tile,
  degenerate or not (the paper's interference; never redone in phase 2); with ``counts`` (constexpr
  DEB) the number of valid pairs whose corrected distance ‖m_c − m_c′‖² − a_c − a_c′ is positive and
  the sum of the debiased CDNV (s²_c + s²_c′)/(2 (corrected)^p) over them (``lcfast.stats.pairwise``:
  the same tile, an elementwise correction) — merged on the host with Chan's formula in
  float64 (vectorised: the exact all-at-once form of ``Moments.merge``). Per-class row sums
  (row_cdnv_sum, row_cos_sum, row_count) go out through float64 atomics on both the tile's rows and
  columns (each pair counts for both its classes). Never anything of size C×C.
* ETF inputs without cancellation: tr G = Σ‖m_c‖² and ΣG = ‖Σ_c m_c‖² are O(C·d) identities
  evaluated in float64 on the host (ΣG of centred means is ~0: summing C² rounded Gram entries
  would be rounding noise), and ΣG² = ‖MᵀM‖_F² (d×d, float64) when d ≤ C — as the torch twin does.
  When C < d the sweep's own Σ_{c<c′} G² is used (ΣG² = Σ‖m_c‖⁴ + 2Σ_{c<c′} G²).
* Degenerate pairs follow the torch twin's rule exactly (``lcfast.stats.pairwise``, tolerance
  :data:`DEGENERATE_TOL` = 1e3·eps64): a zero-norm centred mean (‖m_c‖² ≤ tol·max‖m‖², decided on
  the host in float64), ‖m_c − m_c′‖² ≤ tol·(‖m_c‖² + ‖m_c′‖²), or ‖m̂_c − m̂_c′‖² ≤ 2·tol. They
  are counted and excluded from every moment and row sum. The Gram form cannot resolve distances
  that small, so a tile holding any pair whose Gram-form ‖m_c − m_c′‖² (or ‖m̂_c − m̂_c′‖²) lies
  within the dot product's rounding band of the threshold (``_refine_threshold``: 16·√d·2⁻²⁴ of
  ‖m_c‖² + ‖m_c′‖² in "ieee") is *flagged*: phase 1 emits none of its pair values, and phase 2
  (``_exact_tile_kernel``, launched on the flagged tiles only, as ≤ 64-wide sub-tiles) recomputes
  every pair of it as Σ_k (m_ck − m_c′k)² and Σ_k (m̂_ck − m̂_c′k)² from the float64 means with a
  float64 epilogue. Duplicate or parallel means therefore get exactly the twin's verdict; ``info=``
  reports how many tiles were redone (none on generic data).

Precision (``precision=``)
--------------------------
"ieee" (default): fp32 operands, ``tl.dot(input_precision="ieee")`` (FMA units, no tensor
cores): Gram entries with fp32 rounding (≈ √d·2⁻²⁴ relative to ‖m_c‖‖m_c′‖).
"tf32x3": three TF32 tensor-core products (hi·hi + hi·lo + lo·hi): near-fp32 accuracy.
"tf32": one TF32 product (10-bit mantissa: ≈ 1e-3 relative Gram error).
"bf16": M rounded to bfloat16 (8-bit mantissa), fp32 accumulation.
The Triton interpreter computes "tf32"/"tf32x3" in full fp32, so the CPU tests cannot see the
TF32 error; ``lcfast bench --device cuda`` reports each mode's deviation from the float64 twin.
Expected size, from the operand rounding alone (float64 twin on rounded means; C = 2,048,
d = 1,024, Gaussian means with 8 dominant directions): fp32 ≤ 1e-9 relative on every statistic;
tf32 1.6e-6 (CDNV mean), 8e-6 (variances of cos and log kernel), 8e-8 (log-kernel mean); bf16
3e-5, 1e-4, 1e-6. Rounding errors of individual pairs largely average out over C²/2 pairs; the
variance floor that fp32 Gram entries impose (≈ (√d·2⁻²⁴)² ≈ 4e-12 on var(cos) at d = 1,024) only
matters for a near-perfect simplex ETF, where the float64 torch twin resolves much smaller values.
Flagged tiles are always redone exactly, whatever the mode (the band is wider for tf32/bf16).
"""


import math

import torch
import triton
import triton.language as tl

from lcfast.backend import DEGENERATE_TOL, Moments, PairwiseSums, debias_terms
from lcfast.errors import UsageError
from lcfast.kernels._common import INTERPRET, check_device
from lcfast.kernels._tiles import tile_dot

__all__ = ["pairwise_triton", "PRECISIONS", "DEGENERATE_TOL", "tile_table"]

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")

# Columns of the per-program partial table (one float64 row per program). tl.constexpr so that the
# kernels may read them (Triton refuses plain globals); the host reads `.value`.
COL_N = tl.constexpr(0)  # valid (non-degenerate) pairs of the tile
COL_CDNV = tl.constexpr(1)  # CDNV: tile sum, then M2 about the tile mean (+1)
COL_COS = tl.constexpr(3)  # interference cos: sum, M2
COL_LOGK = tl.constexpr(5)  # log kernel: sum, M2
COL_DEGEN = tl.constexpr(7)  # degenerate pairs
COL_GSQ = tl.constexpr(8)  # Σ_{c<c′} G² (phase 1 only)
COL_FLAGGED = tl.constexpr(9)  # pairs within the rounding band: the tile is redone in phase 2
COL_DOT = tl.constexpr(10)  # raw dot products (DOTS only): count, sum (+1), M2 (+2)
COL_DEB = tl.constexpr(13)  # debiased CDNV (DEB only): pairs with a positive corrected distance, sum (+1)
_NPART = tl.constexpr(15)


@triton.jit
def _tile_sum(x):
    # two-level reduction: rows in the element dtype (≤ BLOCK values), then float64
    return tl.sum(tl.sum(x, axis=1).to(tl.float64), axis=0)


@triton.jit
def _emit_rows(val, ok, inv_n, kf, oi, oj, mi, mj, row_ptr, out_ptr):
    """One pair value's row sums into row_ptr (atomics, both classes of each pair), and its tile
    sum and M2 about the tile mean at out_ptr[0..1] (times kf: 0 when the tile emits nothing)."""
    r_i = tl.sum(val, axis=1)
    r_j = tl.sum(val, axis=0)
    tl.atomic_add(row_ptr + oi, r_i.to(tl.float64), mask=mi, sem="relaxed")
    tl.atomic_add(row_ptr + oj, r_j.to(tl.float64), mask=mj, sem="relaxed")
    s = tl.sum(r_i.to(tl.float64), axis=0)
    e = tl.where(ok, val - (s * inv_n).to(val.dtype), 0.0)
    tl.store(out_ptr, s * kf)
    tl.store(out_ptr + 1, _tile_sum(e * e) * kf)


@triton.jit
def _pow(x, power, POW_MODE: tl.constexpr):
    if POW_MODE == 1:
        y = x
    elif POW_MODE == 2:
        y = x * x
    else:
        y = tl.exp(power * tl.log(x))
    return y


@triton.jit
def _emit(ok, d2, dh2, vi, vj, power, oi, oj, mi, mj, keep, base,
          row_cdnv_ptr, row_cos_ptr, row_cnt_ptr, a_ptr, s2_ptr, POW_MODE: tl.constexpr, DEB: tl.constexpr):
    """Contributions of the valid pairs `ok` of one tile: row sums (atomics, both classes of each
    pair), and per value a tile sum and M2 about the tile mean (stored at the COL_* columns). Element
    values in the inputs' dtype, every sum in float64. keep=False: emit nothing (zeros).
    DEB: also the debiased CDNV from the per-class corrections a_c and ddof-1 variances s²_c."""
    kv = (oi * 0 + keep.to(tl.int32)) > 0  # keep as a block mask
    mi = mi & kv
    mj = mj & kv
    okf = ok.to(d2.dtype)
    rc_i = tl.sum(okf, axis=1)
    rc_j = tl.sum(okf, axis=0)
    tl.atomic_add(row_cnt_ptr + oi, rc_i.to(tl.float64), mask=mi, sem="relaxed")
    tl.atomic_add(row_cnt_ptr + oj, rc_j.to(tl.float64), mask=mj, sem="relaxed")
    n_ok = tl.sum(rc_i.to(tl.float64), axis=0)
    inv_n = 1.0 / tl.maximum(n_ok, 1.0)
    kf = keep.to(tl.float64)
    tl.store(base + COL_N, n_ok * kf)

    # CDNV (σ²_c + σ²_c′) / (2 (d²)^p)
    den = _pow(tl.where(ok, d2, 1.0), power, POW_MODE)
    val = tl.where(ok, (vi[:, None] + vj[None, :]) / (2.0 * den), 0.0)
    _emit_rows(val, ok, inv_n, kf, oi, oj, mi, mj, row_cdnv_ptr, base + COL_CDNV)

    if DEB:  # debiased CDNV (s²_c + s²_c′) / (2 (d² − a_c − a_c′)^p), positive corrections only
        ai = tl.load(a_ptr + oi, mask=mi, other=0.0).to(d2.dtype)
        aj = tl.load(a_ptr + oj, mask=mj, other=0.0).to(d2.dtype)
        si = tl.load(s2_ptr + oi, mask=mi, other=0.0).to(d2.dtype)
        sj = tl.load(s2_ptr + oj, mask=mj, other=0.0).to(d2.dtype)
        dc = d2 - ai[:, None] - aj[None, :]
        okd = ok & (dc > 0.0)
        den = _pow(tl.where(okd, dc, 1.0), power, POW_MODE)
        val = tl.where(okd, (si[:, None] + sj[None, :]) / (2.0 * den), 0.0)
        tl.store(base + COL_DEB, _tile_sum(okd.to(tl.float32)) * kf)
        tl.store(base + COL_DEB + 1, _tile_sum(val) * kf)

    # interference cos = 1 − ‖m̂ − m̂′‖²/2
    val = tl.where(ok, 1.0 - 0.5 * dh2, 0.0)
    _emit_rows(val, ok, inv_n, kf, oi, oj, mi, mj, row_cos_ptr, base + COL_COS)

    # log kernel −½ log ‖m̂ − m̂′‖²
    val = tl.where(ok, -0.5 * tl.log(tl.where(ok, dh2, 1.0)), 0.0)
    s = _tile_sum(val)
    e = tl.where(ok, val - (s * inv_n).to(val.dtype), 0.0)
    tl.store(base + COL_LOGK, s * kf)
    tl.store(base + COL_LOGK + 1, _tile_sum(e * e) * kf)

    return n_ok


@triton.jit
def _tile_classes(tiles_ptr, C, BLOCK: tl.constexpr):
    """This program's tile of the (i-tile, j-tile) table: the class indices of its rows (oi) and
    columns (oj), their in-range masks and their int64 copies for address arithmetic."""
    pid = tl.program_id(0)
    ti = tl.load(tiles_ptr + 2 * pid)
    tj = tl.load(tiles_ptr + 2 * pid + 1)
    oi = ti * BLOCK + tl.arange(0, BLOCK)
    oj = tj * BLOCK + tl.arange(0, BLOCK)
    return pid, oi, oj, oi < C, oj < C, oi.to(tl.int64), oj.to(tl.int64)


@triton.jit
def _pairwise_kernel(
    m_ptr, stride_m,
    sqn_ptr, sqx_ptr, var_ptr,
    tiles_ptr,
    part_ptr,
    row_cdnv_ptr, row_cos_ptr, row_cnt_ptr,
    a_ptr, s2_ptr,
    C, D, power, tol, thr,
    PREC: tl.constexpr, POW_MODE: tl.constexpr, OP_BF16: tl.constexpr, UPCAST: tl.constexpr, DOTS: tl.constexpr,
    DEB: tl.constexpr, BLOCK: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Phase 1: Gram tile by tl.dot, float32 epilogue. A tile holding a pair within the Gram's
    rounding of a degenerate threshold emits no pair values (only ΣG² and its flag): phase 2
    (_exact_tile_kernel) redoes that tile exactly. DOTS: also the count, sum and M2 of the raw
    Gram entries over every pair of the tile (degenerate or not, so never left to phase 2)."""
    pid, oi, oj, mi, mj, oi64, oj64 = _tile_classes(tiles_ptr, C, BLOCK)
    g = tile_dot(m_ptr, stride_m, oi64, mi, m_ptr, stride_m, oj64, mj, D,
                 PREC, OP_BF16, UPCAST, BLOCK, BLOCK, BLOCK_K)

    # sqn: ‖·‖² of the operand vectors (pairs with G); sqx: exact float64 ‖m‖², 0 for the
    # classes the twin's rule calls zero-norm
    ni = tl.load(sqn_ptr + oi, mask=mi, other=0.0).to(tl.float32)
    nj = tl.load(sqn_ptr + oj, mask=mj, other=0.0).to(tl.float32)
    xi = tl.load(sqx_ptr + oi, mask=mi, other=0.0)
    xj = tl.load(sqx_ptr + oj, mask=mj, other=0.0)
    upper = (oi[:, None] < oj[None, :]) & mj[None, :]
    base = part_ptr + pid * _NPART
    gp = tl.where(upper, g, 0.0)
    tl.store(base + COL_GSQ, _tile_sum(gp * gp))
    n_pair = _tile_sum(upper.to(tl.float32))
    if DOTS:
        sg = _tile_sum(gp)
        eg = tl.where(upper, g - (sg / tl.maximum(n_pair, 1.0)).to(tl.float32), 0.0)
        tl.store(base + COL_DOT, n_pair)
        tl.store(base + COL_DOT + 1, sg)
        tl.store(base + COL_DOT + 2, _tile_sum(eg * eg))

    pair = upper & (xi[:, None] > 0.0) & (xj[None, :] > 0.0)
    xsum = (xi[:, None] + xj[None, :]).to(tl.float32)
    d2 = ni[:, None] + nj[None, :] - 2.0 * g
    ri = tl.where(ni > 0.0, 1.0 / tl.sqrt(tl.where(ni > 0.0, ni, 1.0)), 0.0)
    rj = tl.where(nj > 0.0, 1.0 / tl.sqrt(tl.where(nj > 0.0, nj, 1.0)), 0.0)
    dh2 = 2.0 - 2.0 * (g * ri[:, None]) * rj[None, :]  # ‖m̂_c − m̂_c′‖²
    sus = pair & ((d2 <= thr * xsum) | (dh2 <= 2.0 * thr))
    n_sus = tl.sum(tl.sum(sus.to(tl.int32), axis=1), axis=0)
    keep = n_sus == 0
    tl.store(base + COL_FLAGGED, n_sus.to(tl.float64))

    ok = pair & (d2 > tol * xsum) & (dh2 > 2.0 * tol)
    vi = tl.load(var_ptr + oi, mask=mi, other=0.0).to(tl.float32)
    vj = tl.load(var_ptr + oj, mask=mj, other=0.0).to(tl.float32)
    n_ok = _emit(ok, d2, dh2, vi, vj, power, oi, oj, mi, mj, keep, base,
                 row_cdnv_ptr, row_cos_ptr, row_cnt_ptr, a_ptr, s2_ptr, POW_MODE, DEB)
    tl.store(base + COL_DEGEN, (n_pair - n_ok) * keep.to(tl.float64))


@triton.jit
def _exact_tile_kernel(
    m64_ptr, stride_m64,
    sqx_ptr, var_ptr,
    tiles_ptr,
    part_ptr,
    row_cdnv_ptr, row_cos_ptr, row_cnt_ptr,
    a_ptr, s2_ptr,
    C, D, power, tol,
    POW_MODE: tl.constexpr, DEB: tl.constexpr, BLOCK: tl.constexpr,
):
    """Phase 2, for the few flagged tiles: ‖m_c − m_c′‖² and ‖m̂_c − m̂_c′‖² summed directly from
    the float64 means (no Gram cancellation), float64 epilogue, the twin's rule."""
    pid, oi, oj, mi, mj, oi64, oj64 = _tile_classes(tiles_ptr, C, BLOCK)
    xi = tl.load(sqx_ptr + oi, mask=mi, other=0.0)
    xj = tl.load(sqx_ptr + oj, mask=mj, other=0.0)
    rxi = tl.where(xi > 0.0, 1.0 / tl.sqrt(tl.where(xi > 0.0, xi, 1.0)), 0.0)
    rxj = tl.where(xj > 0.0, 1.0 / tl.sqrt(tl.where(xj > 0.0, xj, 1.0)), 0.0)
    e2 = tl.zeros((BLOCK, BLOCK), dtype=tl.float64)
    eh2 = tl.zeros((BLOCK, BLOCK), dtype=tl.float64)
    for k in range(0, D):
        av = tl.load(m64_ptr + oi64 * stride_m64 + k, mask=mi, other=0.0)
        bv = tl.load(m64_ptr + oj64 * stride_m64 + k, mask=mj, other=0.0)
        df = av[:, None] - bv[None, :]
        e2 += df * df
        dfh = (av * rxi)[:, None] - (bv * rxj)[None, :]
        eh2 += dfh * dfh
    upper = (oi[:, None] < oj[None, :]) & mj[None, :]
    pair = upper & (xi[:, None] > 0.0) & (xj[None, :] > 0.0)
    ok = pair & (e2 > tol * (xi[:, None] + xj[None, :])) & (eh2 > 2.0 * tol)
    vi = tl.load(var_ptr + oi, mask=mi, other=0.0)
    vj = tl.load(var_ptr + oj, mask=mj, other=0.0)
    base = part_ptr + pid * _NPART
    keep = pid >= 0
    n_ok = _emit(ok, e2, eh2, vi, vj, power, oi, oj, mi, mj, keep, base,
                 row_cdnv_ptr, row_cos_ptr, row_cnt_ptr, a_ptr, s2_ptr, POW_MODE, DEB)
    tl.store(base + COL_DEGEN, _tile_sum(upper.to(tl.float64)) - n_ok)


def tile_table(n_tiles: int, group: int = 8) -> torch.Tensor:
    """int32 [P, 2] (i-tile, j-tile) pairs with j ≥ i, ordered by GROUP×GROUP super-tile."""
    idx = torch.triu_indices(n_tiles, n_tiles)  # [2, P], row-major over the upper triangle
    ti, tj = idx[0], idx[1]
    g = max(1, int(group))
    key = ((ti // g) * ((n_tiles + g - 1) // g) + (tj // g)) * (g * g) + (ti % g) * g + (tj % g)
    order = torch.argsort(key)
    return torch.stack([ti[order], tj[order]], dim=1).to(torch.int32).contiguous()


def _default_config(precision: str) -> dict:
    if INTERPRET:
        return dict(block=32, block_k=32, num_warps=4, group=4)
    # 64×64 tiles, 8 warps: no register spills in any mode with triton 3.9 for sm_90 (128×128
    # tiles spill 0.5–0.6 KB/thread in the epilogue); tune with block=/num_warps= on the GPU
    return dict(block=64, block_k=32, num_warps=8, group=8)


def _merge(n: torch.Tensor, s: torch.Tensor, m2: torch.Tensor) -> Moments:
    """Chan's parallel formula over all partial (n, sum, M2) rows at once, in float64."""
    n = n.double()
    N = float(n.sum())
    if N == 0:
        return Moments()
    mean = float(s.sum()) / N
    nz = n > 0
    mk = s[nz] / n[nz]
    m2_tot = float(m2[nz].sum() + (n[nz] * (mk - mean) ** 2).sum())
    return Moments(N, mean, m2_tot)


def _refine_threshold(precision: str, d: int) -> float:
    """Relative band (of ‖m_c‖² + ‖m_c′‖²) within which the Gram-form d² (or ‖m̂ − m̂′‖²) is
    re-evaluated exactly: a generous multiple of the operand precision's dot-product rounding."""
    u = {"ieee": 2.0**-24, "tf32x3": 2.0**-22, "tf32": 2.0**-11, "bf16": 2.0**-8}[precision]
    if precision in ("ieee", "tf32x3"):
        return 16.0 * math.sqrt(max(d, 1)) * u
    return 16.0 * u  # input rounding dominates; relative to the norms, not growing with d


def pairwise_triton(
    M: torch.Tensor,
    var: torch.Tensor,
    cdnv_power: float = 1.0,
    precision: str = "ieee",
    *,
    tol: float | None = None,
    block: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    group: int | None = None,
    info: dict | None = None,
    raw_dot: bool = False,
    counts: torch.Tensor | None = None,
) -> PairwiseSums:
    """One fused sweep over the class pairs c < c′ of the centred means M (C×d) and variances var (C).

    See the module docstring for the strategy; ``precision`` is one of :data:`PRECISIONS`, ``tol``
    the degenerate-pair tolerance (default :data:`DEGENERATE_TOL`, the twin's). Per-class row sums
    come back on M's device (row_count int64). Pass a dict as ``info`` to receive launch facts
    (tiles, tiles and pairs re-evaluated exactly). ``raw_dot=True``: also the moments of the raw
    dot products ⟨m_c, m_c′⟩ over every pair (``PairwiseSums.dot``, the paper's interference).
    ``counts`` (n_c, [C]): also the debiased CDNV (``PairwiseSums.cdnv_debiased``, ``.nonpositive``;
    definition in ``lcfast.stats.pairwise``).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"pairwise_triton: precision must be one of {PRECISIONS}, got {precision!r}")
    if M.dim() != 2 or var.dim() != 1 or var.shape[0] != M.shape[0]:
        raise UsageError(f"pairwise_triton: M must be [C, d] and var [C], got {tuple(M.shape)} and {tuple(var.shape)}")
    if counts is not None and (counts.dim() != 1 or counts.shape[0] != M.shape[0]):
        raise UsageError(f"pairwise_triton: counts must be [{M.shape[0]}], got {tuple(counts.shape)}")
    C, d = M.shape
    dev = check_device(M, var, what="pairwise_triton")
    tol = DEGENERATE_TOL if tol is None else float(tol)
    cfg = _default_config(precision)
    blk = block or cfg["block"]
    bk = block_k or cfg["block_k"]
    nw = num_warps or cfg["num_warps"]
    grp = group or cfg["group"]
    if blk < 16 or bk < 16 or blk & (blk - 1) or bk & (bk - 1):
        raise UsageError("pairwise_triton: block and block_k must be powers of two ≥ 16")

    ops = _operands(M, var, precision, tol, counts)
    f64 = dict(dtype=torch.float64, device=dev)
    rows = (torch.zeros(C, **f64), torch.zeros(C, **f64), torch.zeros(C, **f64))  # cdnv, cos, count
    out = PairwiseSums(n_classes=C, row_cdnv_sum=rows[0], row_cos_sum=rows[1])
    # ETF inputs: exact O(C·d) identities in float64 (ΣG² through the d×d MᵀM when d ≤ C)
    M64 = ops["M64"]
    s = M64.sum(0)
    out.gram_sum = float(s @ s)
    out.gram_trace = float((M64 * M64).sum())
    gsq_exact = None
    if d <= C:
        S = M64.T @ M64
        gsq_exact = float((S * S).sum())
    if info is not None:
        info.update(tiles=0, refined_tiles=0, precision=precision)
    if raw_dot:
        out.dot = Moments()
    if counts is not None:
        out.cdnv_debiased = Moments()
    if C < 2:
        out.gram_sq_sum = gsq_exact if gsq_exact is not None else float((ops["sqx"] ** 2).sum())
        out.row_count = rows[2].to(torch.int64)
        return out

    p = float(cdnv_power)
    pow_mode = 1 if p == 1.0 else (2 if p == 2.0 else 0)
    tiles = tile_table(triton.cdiv(C, blk), grp).to(dev)
    P = tiles.shape[0]
    part = _launch_gram_tiles(ops, tiles, rows, C=C, d=d, p=p, pow_mode=pow_mode, tol=tol, precision=precision,
                              raw_dot=raw_dot, blk=blk, bk=bk, nw=nw)
    flagged = (part[:, COL_FLAGGED.value] > 0).nonzero().squeeze(1)
    n_flag = int(flagged.numel())
    if n_flag:
        part = torch.cat([part, _launch_exact_tiles(ops, tiles[flagged], rows, C, d, p, pow_mode, tol, blk)])
    part = part.cpu()
    n_ok = part[:, COL_N.value]

    def col(c, k=0):
        return part[:, c.value + k]

    out.cdnv = _merge(n_ok, col(COL_CDNV), col(COL_CDNV, 1))
    out.cos = _merge(n_ok, col(COL_COS), col(COL_COS, 1))
    out.logk = _merge(n_ok, col(COL_LOGK), col(COL_LOGK, 1))
    if raw_dot:
        out.dot = _merge(col(COL_DOT), col(COL_DOT, 1), col(COL_DOT, 2))
    if counts is not None:
        nd = float(col(COL_DEB).sum())
        out.cdnv_debiased = Moments(nd, float(col(COL_DEB, 1).sum()) / nd if nd else 0.0, 0.0)
        out.nonpositive = int(round(float(n_ok.sum()) - nd))
    out.degenerate = int(round(float(col(COL_DEGEN).sum())))
    sq = (ops["sqn"].cpu() ** 2).sum()
    out.gram_sq_sum = gsq_exact if gsq_exact is not None else float(sq + 2.0 * col(COL_GSQ)[:P].sum())
    out.row_count = rows[2].round().to(torch.int64)
    if info is not None:
        info.update(tiles=P, refined_tiles=n_flag, flagged_pairs=int(col(COL_FLAGGED)[:P].sum()))
    return out


def _operands(M: torch.Tensor, var: torch.Tensor, precision: str, tol: float, counts=None) -> dict:
    """The kernels' inputs: M64 (float64 means, phase 2), Mop (the dot product's operands, fp32 or
    bf16), sqn (float64 ‖·‖² of exactly those operands), sqx (exact float64 ‖m‖², 0 for the classes
    the twin's zero-norm rule drops, decided here exactly), var64; with counts, s2 and a (the
    debiased CDNV's ddof-1 variances and distance corrections, `debias_terms`), else None."""
    C = M.shape[0]
    M64 = M.detach().to(torch.float64).contiguous()
    Mop = M64.to(torch.bfloat16 if precision == "bf16" else torch.float32).contiguous()
    sqn = (Mop.to(torch.float64) ** 2).sum(1).contiguous()
    sqx = (M64 * M64).sum(1)
    scale = float(sqx.max()) if C else 0.0
    zero = sqx <= tol * scale if scale > 0 else torch.ones(C, dtype=torch.bool, device=M.device)
    sqx = sqx.masked_fill(zero, 0.0).contiguous()
    var64 = var.detach().to(torch.float64).contiguous()
    s2 = a = None
    if counts is not None:
        s2, a = (x.contiguous() for x in debias_terms(var64, counts.to(M.device)))
    return dict(M64=M64, Mop=Mop, sqn=sqn, sqx=sqx, var64=var64, s2=s2, a=a)


def _deb_ptrs(ops):
    """(a, s²) for the DEB kernels; without counts any float64 [C] stands in (never read)."""
    return (ops["a"], ops["s2"]) if ops["a"] is not None else (ops["var64"], ops["var64"])


def _launch_gram_tiles(ops, tiles, rows, *, C, d, p, pow_mode, tol, precision, raw_dot, blk, bk, nw) -> torch.Tensor:
    """Phase 1 over every tile of the table; returns its per-program partial table [P, _NPART]."""
    part = torch.zeros(tiles.shape[0], _NPART.value, dtype=torch.float64, device=tiles.device)
    Mop = ops["Mop"]
    prec = {"ieee": "ieee", "tf32x3": "tf32x3", "tf32": "tf32", "bf16": "ieee"}[precision]
    _pairwise_kernel[(tiles.shape[0],)](
        Mop, Mop.stride(0),
        ops["sqn"], ops["sqx"], ops["var64"],
        tiles,
        part,
        *rows,
        *_deb_ptrs(ops),
        C, d, p, tol, tol + _refine_threshold(precision, d),
        PREC=prec, POW_MODE=pow_mode, OP_BF16=precision == "bf16", UPCAST=INTERPRET, DOTS=bool(raw_dot),
        DEB=ops["a"] is not None, BLOCK=blk, BLOCK_K=bk,
        num_warps=nw,
    )
    return part


def _launch_exact_tiles(ops, flagged_tiles, rows, C, d, p, pow_mode, tol, blk) -> torch.Tensor:
    """Phase 2 over the tiles phase 1 flagged; returns their partial table [n_sub, _NPART]."""
    # ≤ 64-wide sub-tiles (a float64 128×128 tile would spill): split each flagged tile; sub-tiles
    # below the diagonal contribute nothing (the kernel's c < c′ mask)
    b2 = min(blk, 64)
    f = blk // b2
    ft = flagged_tiles.to(torch.int64)
    sub = torch.arange(f, device=ft.device)
    si = (ft[:, 0:1] * f + sub[None, :])[:, :, None].expand(-1, f, f)
    sj = (ft[:, 1:2] * f + sub[None, :])[:, None, :].expand(-1, f, f)
    ftiles = torch.stack([si.reshape(-1), sj.reshape(-1)], 1)
    ftiles = ftiles[ftiles[:, 0] <= ftiles[:, 1]].to(torch.int32).contiguous()
    n_sub = int(ftiles.shape[0])
    part = torch.zeros(n_sub, _NPART.value, dtype=torch.float64, device=ft.device)
    M64 = ops["M64"]
    _exact_tile_kernel[(n_sub,)](
        M64, M64.stride(0),
        ops["sqx"], ops["var64"],
        ftiles,
        part,
        *rows,
        *_deb_ptrs(ops),
        C, d, p, tol,
        POW_MODE=pow_mode, DEB=ops["a"] is not None, BLOCK=b2,
        num_warps=8 if b2 >= 64 else 4,
    )
    return part
