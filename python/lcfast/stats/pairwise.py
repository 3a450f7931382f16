"""Blocked sweep over the unordered class pairs c < c': every pairwise NC statistic, never C×C.

`pairwise_torch(M, var, cdnv_power=1.0, block=512, tol=None) -> PairwiseSums` is the torch twin of
`lcfast.kernels.pairwise.pairwise_triton` (same inputs and result type).

Per tile of the upper triangle (rows I, columns J ≥ I, at most block×block values live at a time)
one matrix product gives everything, X_ij = ⟨m̂_i, m_j⟩ = G_ij/‖m_i‖ (m̂ = m/‖m‖):

    dist²_ij  = ‖m_i − m_j‖²   = ‖m_i‖² + ‖m_j‖² − 2‖m_i‖ X_ij      (a row scale, a rank-2 addmm)
    dhat²_ij  = ‖m̂_i − m̂_j‖²  = 2 − 2 X_ij/‖m_j‖                     (one addcmul)

(the Gram form, with the same rounding order of magnitude as two augmented GEMMs for dist² and
dhat² — a few √d·eps of ‖m_i‖² + ‖m_j‖², resp. of 2 — at half the GEMM work; the GEMM is the
larger part of a tile's cost)

then cdnv = (σ²_i + σ²_j) / (2 (dist²)^p), cos = 1 − dhat²/2, log-kernel = −½ log dhat².
Moments are *shifted sums* in float64: per tile Σ(x − K) and Σ(x − K)² (a BLAS dot), summed over
tiles, then mean = K + S1/n and M2 = S2 − S1²/n. K is a fixed, deterministic estimate of the mean
(from a seeded sample of 4096 pairs, exact differences), so |mean − K| is a fraction of a standard
deviation and M2 keeps its digits (a near-ETF with var(cos) ≈ 2e-16 and mean² ≈ 4e-3 comes out to
4e-10 relative; the unshifted Σx² − (Σx)²/n is off by 4e-3 — see tests/test_pairwise.py). The shifts
of dhat² and log dhat² are folded into the addcmul's constant and into the log's argument,
so they cost no extra pass. The moments of cos and of the log-kernel are affine images of those of
dhat² and log dhat² (mean 1 − m/2 and −m/2, M2/4).

Degenerate pairs (counted, excluded from every moment and row sum):
    * ‖m_i − m_j‖² ≤ tol · (‖m_i‖² + ‖m_j‖²)          (equal means, to rounding)
    * ‖m̂_i − m̂_j‖² ≤ 2·tol                             (equal directions)
    * ‖m_i‖² ≤ tol · max_c ‖m_c‖²  (or the other one)   (a zero-norm centred mean: cos undefined)
tol defaults to DEGENERATE_TOL = 1e3 · eps(float64) ≈ 2.2e-13, well above the rounding of the
Gram-form distance of two equal means (measured on exact duplicates spanning 6 orders of magnitude
in norm: ≤ 4, 9, 21 eps·(‖m_i‖²+‖m_j‖²) at d = 64, 1024, 4096) and far below any real separation
(relative squared distance 2e-13, i.e. means equal to ~6 significant digits).

Near pairs are resolved exactly. The Gram form's absolute rounding (a few √d·eps of
‖m_i‖² + ‖m_j‖²) is harmless for well-separated means but ill-conditioned for close ones: a pair at
relative squared distance 1e-10 carries a relative error of ~1e-6 in dist², hence in its (huge)
CDNV, and the exact rounding depends on the BLAS kernel (it moved with the torch build). Every pair
inside the band `refine_band(d)` (dist² ≤ band·(‖m_i‖² + ‖m_j‖²) or dhat² ≤ 2·band) is therefore
recomputed from explicit differences before the degenerate rule and the moments see it, as the
Triton kernel's phase 2 does (its log-kernel too: the shifted buffer dhat² − K would lose the
digits of a tiny dhat²); outside the band the Gram form is good to ~1e-9 relative.

Debiased CDNV (`counts` given: n_c per class). The plug-in ‖μ̂_i − μ̂_j‖² overestimates the
squared distance by σ_i²/n_i + σ_j²/n_j in expectation (docs/metrics.md, "Precision"); with the
unbiased per-class variance s²_c = σ̂²_c·n_c/(n_c − 1) (ddof 1) and a_c = s²_c/n_c = σ̂²_c/(n_c − 1),

    cdnv_debiased_ij = (s²_i + s²_j) / (2 (dist²_ij − a_i − a_j)^p)

is an elementwise correction of the same dist² tile: no extra GEMM. Pairs whose corrected distance
is not positive (the noise explains the whole observed distance; a class with n_c < 2 has no
variance estimate and a_c = +∞) are counted (`PairwiseSums.nonpositive`) and left out of its mean,
as are the degenerate pairs. Only its sum is accumulated (its mean is reported; no row sums).

With `raw_dot=True` the sweep also carries the raw dot products G_ij = ⟨m_i, m_j⟩ over *every*
pair (the paper's interference, docs/metrics.md): G = ‖m_i‖ X_ij from the tile's product —
elementwise, no second GEMM — summed shifted by the exact mean (ΣG − tr G)/(C(C−1));
pairs touching a zero-norm mean (which the blocked sweep skips) are added from Z×C products.

The Gram sums for the ETF errors (ΣG, ΣG², tr G over the full C×C G = M Mᵀ) need no sweep:
ΣG = ‖Σ_c m_c‖², tr G = Σ‖m_c‖², ‖G‖_F² = ‖MᵀM‖_F² (d×d) — computed in O(C·d²) (or O(C²·d)
through C×C tiles when C < d, which is then the smaller matrix).

Memory: M̂ (C·d float64) plus three (four with raw_dot, one more for the debiased CDNV at
p ≠ 1) block² float64 tiles and a block² mask: O(C·d + block²).
Measured (bench/bench_stats.py): see the report in the bench.
"""

from __future__ import annotations

import math

import torch

from lcfast.backend import (
    DEGENERATE_TOL,
    Moments,
    PairwiseSums,
    debias_terms,
    load_launcher,
    resolve_backend,
)
from lcfast.errors import UsageError

__all__ = ["pairwise_torch", "pairwise_sweep", "gram_sums", "cross_gram_sums", "etf_error", "DEGENERATE_TOL",
           "refine_band", "debias_terms"]

F64 = torch.float64


def gram_sums(M: torch.Tensor, block: int = 2048) -> tuple[float, float, float]:
    """(ΣG_ij, ΣG_ij², tr G) of G = M Mᵀ without forming G when C ≥ d (then ‖G‖_F = ‖MᵀM‖_F)."""
    M = M.to(F64)
    C, d = M.shape
    s = M.sum(0)
    gsum = float(s @ s)
    gtr = float((M * M).sum())
    if d <= C:
        S = M.T @ M
        gsq = float((S * S).sum())
    else:  # C < d: the C×C Gram is the smaller one; still tiled
        gsq = 0.0
        for i in range(0, C, block):
            Gi = M[i : i + block] @ M.T
            gsq += float((Gi * Gi).sum())
    return gsum, gsq, gtr


def cross_gram_sums(W: torch.Tensor, M: torch.Tensor, block: int = 2048) -> tuple[float, float, float]:
    """(ΣA_ij, ΣA_ij², tr A) of A = W Mᵀ (rows aligned), without forming A when C ≥ d:
    ‖A‖_F² = ⟨WᵀW, MᵀM⟩_F, ΣA = (Σw)·(Σm), tr A = Σ_c w_c·m_c."""
    W = W.to(F64)
    M = M.to(F64)
    C, d = M.shape
    asum = float(W.sum(0) @ M.sum(0))
    atr = float((W * M).sum())
    if d <= C:
        asq = float(((W.T @ W) * (M.T @ M)).sum())
    else:
        asq = 0.0
        for i in range(0, C, block):
            Ai = W[i : i + block] @ M.T
            asq += float((Ai * Ai).sum())
    return asum, asq, atr


def refine_band(d: int) -> float:
    """Relative band (of ‖m_i‖² + ‖m_j‖² for dist², of 2 for dhat²) inside which the Gram-form
    value is replaced by the exact sum of squared differences: the Gram form's rounding
    (≲ 16·√d·eps64 relative to the norms) stays below 1e-9 of any value outside it."""
    return 16.0 * math.sqrt(max(d, 1)) * torch.finfo(F64).eps * 1e9


def _exact_pairs(near, Mk, nk, i0, j0, chunk=4096):
    """(rows, cols, dist², dhat²) of the `near` entries of a tile, summed from explicit differences
    of the float64 means (memory: chunk × d), or None when there are none."""
    idx = near.nonzero()
    if idx.shape[0] == 0:
        return None
    d2, t2 = [], []
    for c0 in range(0, idx.shape[0], chunk):
        a, b = (idx[c0 : c0 + chunk] + torch.tensor([i0, j0], device=idx.device)).unbind(1)
        dm = Mk[a] - Mk[b]
        d2.append((dm * dm).sum(1))
        dh = Mk[a] / nk[a].sqrt()[:, None] - Mk[b] / nk[b].sqrt()[:, None]
        t2.append((dh * dh).sum(1))
    r, c = idx.unbind(1)
    return r, c, torch.cat(d2), torch.cat(t2)


def _flat(buf: torch.Tensor, r: int, c: int) -> torch.Tensor:
    """A contiguous r×c view at the start of a preallocated buffer (no fresh allocation per tile)."""
    return buf[: r * c].view(r, c)


def _pair_sqdist(X, i, j, chunk=256):
    """‖X_i − X_j‖² for index vectors i, j, in chunks: the same row sums as one (X[i] − X[j])²,
    without P×d temporaries (fresh multi-MB buffers cost more in page faults than the arithmetic)."""
    return torch.cat([((X[a] - X[b]).square_()).sum(1)
                      for a, b in zip(i.split(chunk), j.split(chunk))]) if i.numel() else X.new_zeros(0)


def _shift_estimates(Mk, Mh, nk, hv, p, tol, n_sample=4096, seed=0):
    """Shifts K for the shifted sums: means of cdnv, dhat² and log dhat² over a fixed random sample
    of pairs (exact differences). Any K within a few standard deviations of the true mean keeps
    M2 = Σ(x−K)² − (Σ(x−K))²/n free of cancellation; a sample mean is well within that."""
    K = Mk.shape[0]
    g = torch.Generator(device="cpu").manual_seed(seed)
    P = min(n_sample, K * (K - 1) // 2)
    i = torch.randint(0, K, (P,), generator=g)
    j = torch.randint(0, K, (P,), generator=g)
    keep = i != j
    i, j = i[keep].to(Mk.device), j[keep].to(Mk.device)
    if i.numel() == 0:
        return 0.0, 2.0, 0.0
    d2, t2 = _pair_sqdist(Mk, i, j), _pair_sqdist(Mh, i, j)
    ok = (d2 > tol * (nk[i] + nk[j])) & (t2 > 2 * tol)
    if not bool(ok.any()):
        return 0.0, 2.0, 0.0
    cd = (hv[i] + hv[j])[ok] / d2[ok].pow(p)
    t2 = t2[ok]
    return float(cd.mean()), float(t2.mean()), float(t2.log().mean())


def pairwise_torch(
    M: torch.Tensor,
    var: torch.Tensor,
    cdnv_power: float = 1.0,
    block: int = 512,
    tol: float | None = None,
    raw_dot: bool = False,
    counts: torch.Tensor | None = None,
) -> PairwiseSums:
    """All pairwise sums over c < c' of the rows of M (C×d centred means) with variances var (C,).
    `counts` (n_c, [C]): also the debiased CDNV (`PairwiseSums.cdnv_debiased`, `.nonpositive`).
    See the module docstring; returns `PairwiseSums` (row sums/counts indexed like M's rows).

    Moments use shifted sums: per tile Σ(x − K) and Σ(x − K)² (BLAS dot) with K a sampled estimate
    of the mean (fixed, deterministic), so M2 = S2 − S1²/n does not cancel; the shifts of dhat²
    and of log dhat² are folded into the addcmul's constant / the log's argument (no extra pass).
    `raw_dot=True` adds the moments of ⟨m_c, m_c'⟩ over all pairs (`PairwiseSums.dot`)."""
    if M.dim() != 2 or var.dim() != 1 or var.shape[0] != M.shape[0]:
        raise UsageError(f"pairwise_torch: M must be [C, d] and var [C], got {tuple(M.shape)} and {tuple(var.shape)}")
    if counts is not None and (counts.dim() != 1 or counts.shape[0] != M.shape[0]):
        raise UsageError(f"pairwise_torch: counts must be [{M.shape[0]}], got {tuple(counts.shape)}")
    block = int(block)
    if block < 1:
        raise UsageError(f"pairwise_torch: block must be ≥ 1, got {block}")
    p = float(cdnv_power)
    tol = DEGENERATE_TOL if tol is None else float(tol)
    dev = M.device
    M = M.to(F64)
    var = var.to(F64)
    C, d = M.shape
    out = PairwiseSums(n_classes=C)
    out.gram_sum, out.gram_sq_sum, out.gram_trace = gram_sums(M)
    out.row_cdnv_sum = torch.zeros(C, dtype=F64, device=dev)
    out.row_cos_sum = torch.zeros(C, dtype=F64, device=dev)
    out.row_count = torch.zeros(C, dtype=torch.int64, device=dev)
    if raw_dot:
        out.dot = Moments()
    if counts is not None:
        out.cdnv_debiased = Moments()
    if C < 2:
        return out

    # zero-norm centred means: every pair touching one is degenerate, and left out of the tiles
    n2 = (M * M).sum(1)
    scale = float(n2.max())
    zero = n2 <= tol * scale if scale > 0 else torch.ones(C, dtype=torch.bool, device=dev)
    nz = (~zero).nonzero().squeeze(1)
    K = int(nz.numel())
    Z = C - K
    degenerate = Z * K + Z * (Z - 1) // 2
    if raw_dot and Z:
        out.dot = _zero_row_dots(M, zero, block)
    if K < 2:
        out.degenerate = degenerate
        return out

    # raw dot products are summed shifted by their exact mean over all pairs, (ΣG − tr G)/(C(C−1))
    Kd = (out.gram_sum - out.gram_trace) / (C * (C - 1)) if raw_dot else None
    deb = None
    if counts is not None:
        s2, a = debias_terms(var, counts)
        deb = (0.5 * s2[nz], a[nz])
    sweep = _TileSweep(M[nz], n2[nz], 0.5 * var[nz], p, tol, min(block, K), Kd, deb)
    for i0 in range(0, K, sweep.bs):
        rows = sweep.rows(i0)
        for j0 in range(i0, K, sweep.bs):
            sweep.tile(rows, j0)
    sweep.finish(out, nz, degenerate)
    return out


class _TileSweep:
    """One blocked sweep over the upper triangle of the K non-zero-norm classes (module docstring):
    the GEMM operands and elementwise factors, preallocated tile buffers and the float64 shifted-sum accumulators."""

    def __init__(self, Mk, nk, hv, p: float, tol: float, bs: int, Kd: float | None, deb=None):
        K, d = Mk.shape
        dev = Mk.device
        self.Mk, self.nk, self.hv, self.p, self.tol, self.bs, self.Kd = Mk, nk, hv, p, tol, bs, Kd
        Mh = Mk / nk.sqrt()[:, None]
        self.Kc, self.Kt, self.Kl = _shift_estimates(Mk, Mh, nk, hv, p, tol)
        self.s_l = math.exp(-self.Kl)  # log(s·dhat²) = log dhat² − Kl
        one = torch.ones(K, 1, dtype=F64, device=dev)
        # one GEMM per tile, X_ij = ⟨m̂_i, m_j⟩ = G_ij/‖m_i‖; then elementwise (see tile)
        #   dist²_ij   = ‖m_i‖² + ‖m_j‖² − 2‖m_i‖ X_ij   (a row scale, then a rank-2 addmm)
        #   dhat²_ij − Kt = (2 − Kt) − 2 X_ij/‖m_j‖       (one addcmul)
        # Both carry the Gram form's rounding (a few √d·eps of ‖m_i‖² + ‖m_j‖², resp. of 2), as
        # the two augmented GEMMs they replace did, at half the GEMM work.
        self.Mh = Mh
        self.rn = rn = nk.sqrt()
        self.m2s = -2.0 * rn                                       # row scale of X for dist²
        self.m2r = -2.0 / rn                                       # column scale of X for dhat²
        self.Un = torch.cat([nk[:, None], one], 1)                 # Un Vn: ‖m_i‖² + ‖m_j‖²
        self.Vn = torch.cat([one, nk[:, None]], 1).T.contiguous()
        self.c_t = torch.tensor(2.0 - self.Kt, dtype=F64, device=dev)
        self.tri = torch.ones(bs, bs, dtype=torch.bool, device=dev).triu(1)
        self.bufs = [torch.empty(bs * bs, dtype=F64, device=dev) for _ in range(3 if Kd is None else 4)]
        # debiased CDNV: (½ s², a) per class, its tile buffers, Σ over kept pairs and their count
        self.deb = None
        if deb is not None:  # rank-2 factors of a_i + a_j (Ua Va) and ½ s² (see _debiased)
            hs, a = deb
            self.deb = (torch.stack([a, torch.ones_like(a)], 1), torch.stack([torch.ones_like(a), a], 0), hs)
            # p = 1: corrected in D2's own buffer once the plain CDNV has used it; else a copy
            self.dbufs = [torch.empty(bs * bs, dtype=F64, device=dev)] if p != 1.0 else []
            self.accb = torch.zeros(2, dtype=F64, device=dev)
        if Kd is not None:
            self.mKd = torch.tensor(-Kd, dtype=F64, device=dev)
        self.c_kt = torch.tensor(self.s_l * self.Kt, dtype=F64, device=dev)
        self.acc = torch.zeros(6, dtype=F64, device=dev)  # S1, S2 of cdnv-Kc, dhat²-Kt, log dhat²-Kl
        self.accd = torch.zeros(2, dtype=F64, device=dev)  # S1, S2 of G − Kd (raw_dot)
        self.rc = torch.zeros(K, dtype=F64, device=dev)  # row sums of (cdnv − Kc), (dhat² − Kt), valid counts
        self.rt = torch.zeros(K, dtype=F64, device=dev)
        self.rcount = torch.zeros(K, dtype=F64, device=dev)
        self.n_valid = 0
        self.degenerate = 0
        self.band = max(refine_band(d), tol)

    def rows(self, i0: int):
        """What every tile of the row block starting at i0 shares."""
        i1 = min(i0 + self.bs, self.Mk.shape[0])
        nki = self.nk[i0:i1]
        return (i0, i1, self.Mh[i0:i1], self.m2s[i0:i1, None], self.Un[i0:i1], self.hv[i0:i1], nki,
                float(nki.max()), self._amax(i0, i1))

    def _amax(self, i0: int, i1: int) -> float:
        """max a_c over classes i0..i1 (debiased CDNV; +∞ with a class of n_c < 2), else 0."""
        return float(self.deb[0][i0:i1, 0].max()) if self.deb is not None else 0.0

    def tile(self, rows, j0: int) -> None:
        """Accumulate the tile (row block, columns j0..j0+bs): Gram-form dist² and dhat² − Kt, near
        pairs recomputed exactly, degenerate pairs masked, then the shifted sums."""
        i0, i1, Mhi, m2si, Uni, hvi, nki, nki_max, amax_i = rows
        j1 = min(j0 + self.bs, self.Mk.shape[0])
        bi, bj = i1 - i0, j1 - j0
        nkj = self.nk[j0:j1]
        nkj_max = float(nkj.max())
        diag = j0 == i0
        tri = self.tri[:bi, :bj]
        X = torch.mm(Mhi, self.Mk[j0:j1].T, out=_flat(self.bufs[1], bi, bj))
        if self.Kd is not None:  # G − Kd = ‖m_i‖ X − Kd over every pair of the tile, degenerate or not
            Gd = torch.addcmul(self.mKd, X, self.rn[i0:i1, None], out=_flat(self.bufs[3], bi, bj))
            if diag:
                Gd.masked_fill_(~tri, 0.0)
            gf = Gd.view(-1)
            self.accd += torch.stack([gf.sum(), torch.dot(gf, gf)])
        D2 = torch.mul(X, m2si, out=_flat(self.bufs[0], bi, bj)).addmm_(Uni, self.Vn[:, j0:j1])
        T = torch.addcmul(self.c_t, X, self.m2r[j0:j1], out=X)  # in place: X is not needed again
        # the tile's minima, taken once: they decide the refine and degenerate checks (band ≥ tol)
        # and, when nothing was refined, bound every dist² of the tile from below
        d2min, tmin = float(D2.min()), float(T.min())
        ex = self._refine(D2, T, nki, nkj, nki_max, nkj_max, i0, j0, tri=tri if diag else None, d2min=d2min,
                          tmin=tmin)
        valid = self._valid(D2, T, ex, nki, nkj, nki_max, nkj_max, j0, tri=tri if diag else None, d2min=d2min,
                            tmin=tmin)
        # no corrected distance of the tile can be ≤ 0 when even the smallest dist² (nothing
        # refined, so d2min bounds them all) exceeds twice the largest a_i + a_j (the factor 2:
        # far from rounding); then the debiased CDNV needs no min pass over its tile
        deb_pos = ex is None and d2min > 2.0 * (amax_i + self._amax(j0, j1))
        if self.deb is not None and self.p != 1.0:  # D2 is about to be raised to p: a copy
            self._debiased(D2, valid, i0, i1, j0, j1, out=_flat(self.dbufs[0], bi, bj), pos=deb_pos)
        if self.p != 1.0:
            if not (ex is None and d2min >= 0):  # Gram-form rounding can dip below 0: clamp only then
                D2.clamp_min_(0)
            D2.pow_(self.p)
        cd = torch.add(hvi[:, None], self.hv[None, j0:j1], out=_flat(self.bufs[2], bi, bj)).div_(D2).sub_(self.Kc)
        if self.deb is not None and self.p == 1.0:  # D2 is free now: corrected in place (less traffic)
            self._debiased(D2, valid, i0, i1, j0, j1, out=D2, pos=deb_pos)
        self._accumulate(cd, T, ex, valid, i0, i1, j0, j1)

    def _debiased(self, D2, valid, i0, i1, j0, j1, out, pos: bool = False) -> None:
        """Σ and count of (s²_i + s²_j)/(2 (dist² − a_i − a_j)^p) over the tile's valid pairs with a
        positive corrected distance (the others: excluded; finish() counts them). A hot path, so
        few passes over the tile: the correction a_i + a_j is a rank-2 update (one addmm; a_c = +∞
        for a class without a variance estimate); with R = 1/(corrected) the sum
        Σ_ij (½s²_i + ½s²_j) R_ij^p = ½s²ᵀ(R^p 1) + 1ᵀ(R^p ½s²) is one product of R^p with two
        columns. A tile whose R is all > 0 (its min) needs nothing else; otherwise R is clamped at
        0 (0 exactly where the corrected distance is ≤ 0, −∞ included), masked to the valid pairs,
        and its non-zeros counted. A corrected distance of exactly +0 (R = +∞) is masked too.
        `pos`: the caller has bounded every corrected distance of the tile above 0 (no min pass)."""
        Ua, Va, hs = self.deb
        if out is D2:
            R = D2.addmm_(Ua[i0:i1], Va[:, j0:j1], alpha=-1.0).reciprocal_()
        else:
            R = torch.addmm(D2, Ua[i0:i1], Va[:, j0:j1], alpha=-1.0, out=out).reciprocal_()
        n = None
        if valid is None and (pos or float(R.min()) > 0):  # the common tile: every pair counts
            n = torch.tensor(float(R.numel()), dtype=F64, device=R.device)
        else:
            R.clamp_min_(0.0)
            if valid is not None:
                R.masked_fill_(~valid, 0.0)
        if self.p != 1.0:
            R.pow_(self.p)
        s = self._deb_sum(R, hs, i0, i1, j0, j1)
        if not math.isfinite(float(s)):  # R = +∞: a corrected distance of +0 (or below float64's range)
            R.masked_fill_(torch.isinf(R), 0.0)
            s = self._deb_sum(R, hs, i0, i1, j0, j1)
            n = None
        if n is None:
            n = torch.count_nonzero(R).to(F64)
        self.accb += torch.stack([s, n])

    def _deb_sum(self, R, hs, i0, i1, j0, j1):
        """Σ_ij (hs_i + hs_j) R_ij = hs_iᵀ (R 1) + 1ᵀ (R hs_j): one pass over R."""
        hj = hs[j0:j1]
        r = torch.mm(R, torch.stack([torch.ones_like(hj), hj], 1))
        return torch.dot(hs[i0:i1], r[:, 0]) + r[:, 1].sum()

    def _refine(self, D2, T, nki, nkj, nki_max, nkj_max, i0, j0, *, tri, d2min, tmin):
        """Pairs inside the refine band get their exact dist² and dhat² (− Kt) written into D2 / T;
        returns them as `_exact_pairs` does (None when none). `tri`: the diagonal tile's c < c' mask;
        d2min, tmin: the minima of D2 and T."""
        band, Kt = self.band, self.Kt
        if not (tri is not None or d2min <= band * (nki_max + nkj_max) or tmin <= 2.0 * band - Kt):
            return None
        near = (D2 <= band * (nki[:, None] + nkj[None, :])) | (T <= 2.0 * band - Kt)
        if tri is not None:
            near &= tri
        ex = _exact_pairs(near, self.Mk, self.nk, i0, j0)
        if ex is not None:
            er, ec, ed2, et2 = ex
            D2[er, ec] = ed2
            T[er, ec] = et2 - Kt
        return ex

    def _valid(self, D2, T, ex, nki, nkj, nki_max, nkj_max, j0, *, tri, d2min, tmin):
        """The tile's non-degenerate pairs (None: all of them), counting the degenerate ones.
        d2min, tmin: D2's and T's minima before refinement, which are still theirs when nothing was
        refined (ex None); otherwise the full test runs anyway."""
        tol, Kt = self.tol, self.Kt
        if not (tri is not None or ex is not None or d2min <= tol * (nki_max + nkj_max)
                or tmin <= 2.0 * tol - Kt):
            return None
        deg = (D2 <= tol * (nki[:, None] + nkj[None, :])) | (T <= 2.0 * tol - Kt)
        if ex is not None:  # decided on the exact values (T holds dhat² − Kt: rounded at ~eps·Kt)
            er, ec, ed2, et2 = ex
            deg[er, ec] = (ed2 <= tol * (nki[er] + self.nk[j0 + ec])) | (et2 <= 2.0 * tol)
        if tri is not None:
            self.degenerate += int((deg & tri).sum())
            return tri & ~deg
        self.degenerate += int(deg.sum())
        return ~deg

    def _accumulate(self, cd, T, ex, valid, i0, i1, j0, j1) -> None:
        """Shifted sums and row sums of the tile's valid values (cdnv − Kc, dhat² − Kt, log dhat² − Kl);
        the log kernel is computed in T's buffer once T's sums are taken (one buffer, one pass less)."""
        bi, bj = i1 - i0, j1 - j0
        if valid is None:
            self.n_valid += bi * bj
            self.rcount[i0:i1] += bj
            self.rcount[j0:j1] += bi
        else:
            inv = ~valid
            cd.masked_fill_(inv, 0.0)
            T.masked_fill_(inv, 0.0)
            vf = valid.to(F64)
            self.n_valid += int(valid.sum())
            self.rcount[i0:i1] += vf.sum(1)
            self.rcount[j0:j1] += vf.sum(0)
        r1 = cd.sum(1)
        self.rc[i0:i1] += r1
        self.rc[j0:j1] += cd.sum(0)
        r2 = T.sum(1)
        self.rt[i0:i1] += r2
        self.rt[j0:j1] += T.sum(0)
        cdf, Tf = cd.view(-1), T.view(-1)
        s = [r1.sum(), torch.dot(cdf, cdf), r2.sum(), torch.dot(Tf, Tf)]
        # log(s_l·dhat²) = log dhat² − Kl, in place (T holds dhat² − Kt; 0 at masked pairs, harmless)
        L = torch.add(self.c_kt, T, alpha=self.s_l, out=T).log_()
        if ex is not None:  # log dhat² − Kl from the exact dhat², not from the shifted T
            er, ec, _, et2 = ex
            L[er, ec] = et2.log() - self.Kl
        if valid is not None:
            L.masked_fill_(inv, 0.0)
        Lf = L.view(-1)
        self.acc += torch.stack(s + [Lf.sum(), torch.dot(Lf, Lf)])

    def finish(self, out: PairwiseSums, nz: torch.Tensor, degenerate: int) -> None:
        """Moments (mean = K + S1/n, M2 = S2 − S1²/n, affine images for cos and the log kernel) and
        the row sums of the non-zero classes `nz` into `out`; `degenerate`: the zero-norm pairs."""
        out.degenerate = int(degenerate + self.degenerate)
        if self.n_valid:
            s = self.acc.tolist()
            n = float(self.n_valid)

            def mom(s1, s2, shift, a=1.0, b=0.0):  # moments of a·(x) + b with x = shift + (x − shift)
                mean = shift + s1 / n
                m2 = max(s2 - s1 * s1 / n, 0.0)
                return Moments(n, a * mean + b, a * a * m2)

            out.cdnv = mom(s[0], s[1], self.Kc)
            out.cos = mom(s[2], s[3], self.Kt, -0.5, 1.0)
            out.logk = mom(s[4], s[5], self.Kl, -0.5, 0.0)
        if self.deb is not None:
            sb, nb = self.accb.tolist()
            out.cdnv_debiased = Moments(nb, sb / nb if nb else 0.0, 0.0)
            out.nonpositive = int(self.n_valid - round(nb))
        if self.Kd is not None:
            K = self.Mk.shape[0]
            nd = K * (K - 1) / 2
            s1, s2 = self.accd.tolist()
            out.dot = Moments(nd, self.Kd + s1 / nd, max(s2 - s1 * s1 / nd, 0.0)).merge(out.dot)
        rcount = self.rcount
        out.row_cdnv_sum[nz] = self.rc + self.Kc * rcount
        out.row_cos_sum[nz] = rcount - 0.5 * (self.rt + self.Kt * rcount)
        out.row_count[nz] = rcount.round().to(torch.int64)


def _zero_row_dots(M: torch.Tensor, zero: torch.Tensor, block: int) -> Moments:
    """Moments of ⟨m_z, m_j⟩ over the pairs touching a zero-norm class z (which the blocked sweep
    leaves out): (z, j) for every other class j, each pair once. Z×C products, in row blocks."""
    zi = zero.nonzero().squeeze(1)
    C = M.shape[0]
    out = Moments()
    for a in range(0, int(zi.numel()), block):
        rows = zi[a : a + block]
        G = M[rows] @ M.T  # [b, C]
        # a pair of two zero-norm classes is counted from its smaller index only
        take = ~zero[None, :] | (torch.arange(C, device=M.device)[None, :] > rows[:, None])
        out = out.merge(Moments.of(G[take]))
    return out


def pairwise_sweep(
    M: torch.Tensor,
    var: torch.Tensor,
    cdnv_power: float = 1.0,
    backend: str = "auto",
    block: int = 512,
    tol: float | None = None,
    raw_dot: bool = False,
    counts: torch.Tensor | None = None,
) -> PairwiseSums:
    """Dispatch the sweep: backend "auto" (Triton on CUDA), "torch" or "triton". `counts` (n_c):
    also the debiased CDNV (module docstring)."""
    be = resolve_backend(backend, M, family="pairwise")
    if be == "triton":
        launch = load_launcher("pairwise", "pairwise_triton")
        return launch(M, var, cdnv_power=cdnv_power, precision="ieee", tol=tol, raw_dot=raw_dot, counts=counts)
    return pairwise_torch(M, var, cdnv_power=cdnv_power, block=block, tol=tol, raw_dot=raw_dot, counts=counts)


def etf_error(gram_sum: float, gram_sq_sum: float, gram_trace: float, C: int) -> float | None:
    """‖G/‖G‖_F − (I − J/C)/√(C−1)‖_F from the three Gram sums:
    ‖Ĝ − E‖² = ‖Ĝ‖² + ‖E‖² − 2⟨Ĝ, E⟩ = 2 − 2 (tr G − ΣG/C) / (√(C−1) ‖G‖_F).
    The sqrt of a difference near 0 has a floor of ~√eps ≈ 1e-8 (a perfect ETF reads ≲ 1e-7)."""
    if C < 2 or gram_sq_sum <= 0:
        return None
    inner = (gram_trace - gram_sum / C) / (math.sqrt(C - 1) * math.sqrt(gram_sq_sum))
    return math.sqrt(max(0.0, 2.0 - 2.0 * inner))
