"""NC4: agreement between the nearest-class-centre (NCC) classifier and the model's own argmax.

`ncc_torch(H, means, kept_ids, W, b=None, block=1024)` is the torch twin of
`lcfast.kernels.ncc.ncc_triton` (same signature; returns `(ncc_pred, lm_pred)`, int64 class ids):

    ncc_pred[i] = kept_ids[argmin_k ‖h_i − means[k]‖²]       (nearest kept class mean)
    lm_pred[i]  = argmax_c (w_c·h_i + b_c) over the full vocabulary

`means` is either the full [C, d] table (C = W.shape[0], indexed by kept_ids) or only the kept rows
[K, d], row k being class kept_ids[k]; a table with C rows is always read as the full one. Classes are visited in blocks
with a running argmin / argmax (first index wins ties, like torch.argmin on the full matrix), rows in chunks:
at most row_block × block scores exist at once, never the B×C matrix. ‖h − μ‖² is ranked as
‖μ‖² − 2 h·μ (‖h‖² is common to a row). The decisions are those of float64 arithmetic: by
default the products run in float32 (twice the GEMM rate on CPUs) and every row whose best and
runner-up are closer than a rigorous float32 error bound is recomputed in float64 (the comment
above `_Table`); `precision="float64"` computes everything in float64.

With `all_classes=True` (and the full [C, d] `means` table) the same search also returns

    ncc_all_pred[i] = argmin_c ‖h_i − means[c]‖² over *all* C classes   (the paper's NC4)

classes unseen in training sitting at the origin (ClassStats.means is 0 there) and classes below
min_count at their own means. No second search: the means not kept are visited after the kept ones
(K + (C − K) = C rows in all) and the two running minima are compared, ties going to the lower class
id as argmin over the full table would.

`NCCStats` accumulates, per class (by the true label of the validation position, kept labels only),
hits (ncc_pred == lm_pred) and totals; `.agreement` = Σhits / Σtotals (nc4_agreement). With
`all_classes=True` also `hits_all` (ncc_all_pred == lm_pred), the paper's `hits` (docs/metrics.md).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from lcfast import validate
from lcfast.backend import load_launcher, resolve_backend
from lcfast.errors import DataError, UsageError
from lcfast.stats import state_file
from lcfast.stats.inputs import as_tensor
from lcfast.stats.state_file import tensor_fingerprint

__all__ = ["ncc_torch", "ncc_predict", "NCCStats"]

F64 = torch.float64


def _kept_means(means: torch.Tensor, kept_ids: torch.Tensor, n_vocab: int) -> torch.Tensor:
    K = kept_ids.numel()
    if means.shape[0] == n_vocab:  # a table with C rows is always the full one (as ncc_triton reads it)
        return means.index_select(0, kept_ids)
    if means.shape[0] == K:
        return means
    raise UsageError(f"ncc: means must have {K} (kept) or {n_vocab} rows, got {means.shape[0]}")


def rest_ids(kept_ids: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The class ids not in kept_ids, ascending (int64, on kept_ids' device)."""
    m = torch.ones(n_classes, dtype=torch.bool, device=kept_ids.device)
    m[kept_ids] = False
    return m.nonzero().squeeze(1)


def _running_min(h: torch.Tensor, mu: torch.Tensor, mn: torch.Tensor, block: int):
    """(min score, argmin row) of ‖μ‖² − 2 h·μ over the rows of mu, in blocks; first row wins ties."""
    n = h.shape[0]
    best = torch.full((n,), float("inf"), dtype=F64, device=h.device)
    arg = torch.zeros(n, dtype=torch.int64, device=h.device)
    for k0 in range(0, mu.shape[0], block):
        k1 = min(mu.shape[0], k0 + block)
        s = torch.addmm(mn[k0:k1].unsqueeze(0), h, mu[k0:k1].T, alpha=-2.0)
        v, i = s.min(1)
        upd = v < best
        best = torch.where(upd, v, best)
        arg = torch.where(upd, i + k0, arg)
    return best, arg


# ------------------------------------------------------------------------------------------------
# float32 products, float64 decisions
#
# Every score above is c_k + α·(h·t_k): (c, α, t) = (‖μ_k‖², −2, μ_k) for the means and
# (−b_k, −1, w_k) for the LM head (its argmax is the argmin of the negated logit). The float32 path
# computes the same scores from float32 copies in one float32 GEMM per tile and keeps, per row, the
# smallest and the second smallest score (m1 ≤ m2) next to the argmin, fused into the tile loop.
# Against the exact real-number score of the float64 inputs, each float32 score is off by at most
#
#     E(h) = 1.5 · ( |α|(1+u)·[γ_{d+2}(‖h‖ + a√d)(T + a√d) + d·2⁻¹²⁵] + 2u·c_max + u|α|‖h‖T + 2⁻¹²⁴ )
#
# with u = 2⁻²⁴, γ_n = nu/(1 − nu) (the classical bound for any summation order, the +2 covering
# the rounding of h and t to float32), T = max_k ‖t_k‖, c_max = max_k |c_k|, and a = 2⁻¹⁰² with the
# absolute 2⁻¹²⁵, 2⁻¹²⁴ terms covering float32 underflow (flush-to-zero included); the factor 1.5
# leaves room for the rounding of the bound itself and for the float64 reference's own error
# (≈ 2⁻²⁹ of E). A row with m2 − m1 > 2E has a unique exact minimiser which any float64
# evaluation also ranks first, so its float32 argmin *is* the float64 decision. The other rows
# (ties, near-ties, duplicate means: typically well under 1%) are recomputed with the float64
# path. Decisions are therefore those of the float64 path, exactly. Magnitudes that could overflow
# float32 (‖h‖·T or |c| ≥ 1e36), a float32 matmul precision other than "highest" (it may round
# operands to bf16/tf32), or too many near-ties send the chunk to the float64 path.
# ------------------------------------------------------------------------------------------------

_U32 = 2.0**-24
_A32 = 2.0**-102
_F32_LIMIT = 1e36
#: above this share of rows needing the float64 recomputation a chunk is recomputed whole
_REFINE_MAX_SHARE = 0.25


class _Table:
    """One candidate table of the float32 search: rows t_k (float32 copy), offsets c_k, scale α."""

    def __init__(self, t: torch.Tensor, c: torch.Tensor, alpha: float):
        # exact copies of an earlier row (the unseen classes' shared origin, tied logits) would make
        # every row they win a "tie" to recompute; the float64 path ranks a copy after its first
        # occurrence, so searching the first occurrences only gives its decisions
        self.keep = _first_occurrences(t, c)
        if self.keep is not None:
            t, c = t.index_select(0, self.keep), c.index_select(0, self.keep)
        self.t32 = t.to(torch.float32)
        self.c32 = c.to(torch.float32)
        self.alpha = alpha
        self.n = t.shape[0]
        self.tmax = float(t.norm(dim=1).max()) if self.n else 0.0
        self.cmax = float(c.abs().max()) if self.n else 0.0

    def bound(self, hn: torch.Tensor, d: int) -> torch.Tensor:
        """E(h) per row (float64 [n]); see the comment above."""
        nu = (d + 2) * _U32
        gam = nu / (1.0 - nu)
        ad = _A32 * math.sqrt(d)
        a = abs(self.alpha)
        e = a * (1 + _U32) * (gam * (hn + ad) * (self.tmax + ad) + d * 2.0**-125)
        return 1.5 * (e + 2 * _U32 * self.cmax + _U32 * a * hn * self.tmax + 2.0**-124)

    def fits(self, hn_max: float) -> bool:
        return hn_max * self.tmax * 2 < _F32_LIMIT and self.cmax < _F32_LIMIT and math.isfinite(self.tmax)

    def search(self, h32: torch.Tensor, block: int):
        """(m1, argmin, m2) float32 / int64 [n]: the two smallest scores of each row (m2 = +inf with
        a single candidate) and the first index of the smallest, over the rows of the table."""
        n = h32.shape[0]
        m1 = torch.full((n,), float("inf"), dtype=torch.float32, device=h32.device)
        m2 = torch.full_like(m1, float("inf"))
        arg = torch.zeros(n, dtype=torch.int64, device=h32.device)
        for k0 in range(0, self.n, block):
            k1 = min(self.n, k0 + block)
            s = torch.addmm(self.c32[k0:k1].unsqueeze(0), h32, self.t32[k0:k1].T, alpha=self.alpha)
            v, i = s.min(1)
            if k1 - k0 > 1:
                s.scatter_(1, i.unsqueeze(1), float("inf"))
                v2 = s.amin(1)
            else:
                v2 = torch.full_like(v, float("inf"))
            # the two smallest of {m1, m2, v, v2} (m1 ≤ m2, v ≤ v2); strict < keeps the first index
            m2 = torch.minimum(torch.minimum(m2, v2), torch.maximum(m1, v))
            upd = v < m1
            m1 = torch.where(upd, v, m1)
            arg = torch.where(upd, i + k0, arg)
        if self.keep is not None:
            arg = self.keep[arg]
        return m1, arg, m2


def _first_occurrences(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor | None:
    """Ascending indices of the rows of (t, c) that are not an exact copy of an earlier row, or None
    when there is no copy. Rows are bucketed by a fixed random projection (sort), and only rows
    equal to their neighbour in that order are compared; a copy the buckets miss is merely kept
    (its ties then go to the float64 recomputation)."""
    n = t.shape[0]
    if n < 2:
        return None
    g = torch.Generator(device="cpu").manual_seed(0x5EED)
    v = torch.randn(t.shape[1] + 1, generator=g, dtype=F64).to(t.device)
    key = t @ v[:-1] + c * v[-1]
    ks, order = torch.sort(key, stable=True)
    same = (ks[1:] == ks[:-1]).nonzero().squeeze(1)
    if same.numel() == 0:
        return None
    a, b = order[same], order[same + 1]  # stable: a < b
    eq = (t[a] == t[b]).all(1) & (c[a] == c[b])
    if not bool(eq.any()):
        return None
    drop = torch.zeros(n, dtype=torch.bool, device=t.device)
    drop[b[eq]] = True
    return (~drop).nonzero().squeeze(1)


def _f32_allowed() -> bool:
    """Whether float32 CPU/GPU matmuls are plain IEEE float32 (no tf32/bf16 operand rounding)."""
    return torch.get_float32_matmul_precision() == "highest"


def _f32_chunk(h: torch.Tensor, hn: torch.Tensor, kept: _Table, rest: _Table | None, head: _Table, block: int):
    """The float32 search of one row chunk h (float64 [n, d], row norms hn): (kept argmin, all-class
    pick or None, head argmin, rows to recompute in float64). The all-class pick is (from_rest bool,
    argmin in rest)."""
    d = h.shape[1]
    h32 = h.to(torch.float32)
    m1, ak, m2 = kept.search(h32, block)
    ek = kept.bound(hn, d)
    redo = (m2.to(F64) - m1.to(F64)) <= 2 * ek
    pick = None
    if rest is not None:
        r1, ar, r2 = rest.search(h32, block)
        # the nearest of all C means: the two smallest of both walks, the larger of the two bounds
        e = torch.maximum(ek, rest.bound(hn, d))
        lo = torch.minimum(m1, r1)
        second = torch.minimum(torch.minimum(m2, r2), torch.maximum(m1, r1))
        redo |= (second.to(F64) - lo.to(F64)) <= 2 * e
        pick = (r1 < m1, ar)
    l1, al, l2 = head.search(h32, block)
    redo |= (l2.to(F64) - l1.to(F64)) <= 2 * head.bound(hn, d)
    return ak, pick, al, redo


@torch.no_grad()
def ncc_torch(
    H: torch.Tensor,
    means: torch.Tensor,
    kept_ids: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor | None = None,
    block: int = 1024,
    row_block: int = 2048,
    *,
    all_classes: bool = False,
    precision: str = "auto",
):
    """(ncc_pred int64[B], lm_pred int64[B]), with all_classes=True (ncc_pred, lm_pred,
    ncc_all_pred); see the module docstring. all_classes needs the full [C, d] means table.

    precision "auto" (default): float32 products with the near-ties recomputed in float64 — the
    decisions of "float64" exactly (the comment above `_Table`), at the float32 GEMM rate;
    "float64": every product in float64."""
    if precision not in ("auto", "float64"):
        raise UsageError(f"ncc_torch: precision must be 'auto' or 'float64', got {precision!r}")
    if H.dim() != 2 or W.dim() != 2 or H.shape[1] != W.shape[1] or means.dim() != 2 or means.shape[1] != H.shape[1]:
        raise UsageError(
            f"ncc_torch: H [B, d], means [K, d], W [C, d] must share d; "
            f"got {tuple(H.shape)}, {tuple(means.shape)}, {tuple(W.shape)}"
        )
    C = W.shape[0]
    if b is not None and b.shape != (C,):
        raise UsageError(f"ncc_torch: b must be [{C}], got {tuple(b.shape)}")
    kept_ids = kept_ids.to(H.device, torch.int64).reshape(-1)
    if kept_ids.numel() == 0:
        raise UsageError("ncc_torch: no kept classes")
    if all_classes and means.shape[0] != C:
        raise UsageError(f"ncc_torch: all_classes needs the full means table [{C}, d], got {tuple(means.shape)}")
    dev = H.device
    mu = _kept_means(means.to(dev), kept_ids, C).to(F64)
    Wd = W.to(dev, F64)
    bd = None if b is None else b.to(dev, F64)
    mn = (mu * mu).sum(1)
    B = H.shape[0]
    ncc_pred = torch.empty(B, dtype=torch.int64, device=dev)
    lm_pred = torch.empty(B, dtype=torch.int64, device=dev)
    ncc_all = torch.empty(B, dtype=torch.int64, device=dev) if all_classes else None
    rest = mu_r = mn_r = None
    if all_classes:
        rest = rest_ids(kept_ids, C)
        mu_r = means.to(dev).index_select(0, rest).to(F64)
        mn_r = (mu_r * mu_r).sum(1)

    def exact(h: torch.Tensor):
        """The float64 decisions of rows h: (ncc, lm, ncc_all or None)."""
        best, arg = _running_min(h, mu, mn, block)
        kid = kept_ids[arg]
        out_all = None
        if all_classes:
            out_all = kid
            if rest.numel():
                best_r, arg_r = _running_min(h, mu_r, mn_r, block)
                rid = rest[arg_r]
                take = (best_r < best) | ((best_r == best) & (rid < kid))
                out_all = torch.where(take, rid, kid)
        n = h.shape[0]
        best = torch.full((n,), -float("inf"), dtype=F64, device=dev)
        arg = torch.zeros(n, dtype=torch.int64, device=dev)
        for c0 in range(0, C, block):
            c1 = min(C, c0 + block)
            if bd is None:
                s = h @ Wd[c0:c1].T
            else:
                s = torch.addmm(bd[c0:c1].unsqueeze(0), h, Wd[c0:c1].T)
            v, i = s.max(1)
            upd = v > best
            best = torch.where(upd, v, best)
            arg = torch.where(upd, i + c0, arg)
        return kid, arg, out_all

    tables = None
    if precision == "auto" and _f32_allowed():
        kept_t = _Table(mu, mn, -2.0)
        rest_t = _Table(mu_r, mn_r, -2.0) if all_classes and rest.numel() else None
        head_t = _Table(Wd, torch.zeros(C, dtype=F64, device=dev) if bd is None else -bd, -1.0)
        tables = (kept_t, rest_t, head_t)
    for r0 in range(0, B, row_block):
        r1 = min(B, r0 + row_block)
        h = H[r0:r1].to(F64)
        fast = tables is not None
        if fast:
            hn = h.norm(dim=1)
            hmax = float(hn.max())
            fast = all(t is None or t.fits(hmax) for t in tables)
        if fast:
            ak, pick, al, redo = _f32_chunk(h, hn, *tables, block)
            if int(redo.sum()) > _REFINE_MAX_SHARE * (r1 - r0):
                fast = False
        if not fast:
            kid, lm, out_all = exact(h)
            ncc_pred[r0:r1], lm_pred[r0:r1] = kid, lm
            if all_classes:
                ncc_all[r0:r1] = out_all
            continue
        kid = kept_ids[ak]
        ncc_pred[r0:r1] = kid
        lm_pred[r0:r1] = al
        if all_classes:
            ncc_all[r0:r1] = kid if pick is None else torch.where(pick[0], rest[pick[1]], kid)
        idx = redo.nonzero().squeeze(1)
        if idx.numel():
            kid_x, lm_x, all_x = exact(h.index_select(0, idx))
            ncc_pred[r0 + idx], lm_pred[r0 + idx] = kid_x, lm_x
            if all_classes:
                ncc_all[r0 + idx] = all_x
    if all_classes:
        return ncc_pred, lm_pred, ncc_all
    return ncc_pred, lm_pred


def ncc_predict(H, means, kept_ids, W, b=None, backend: str = "auto", block: int = 1024, *, all_classes: bool = False,
                precision: str = "auto"):
    """Dispatch: "auto" (Triton on CUDA), "torch" or "triton"; `precision` is the torch twin's
    ("auto": float32 products, float64 decisions; "float64"); the Triton kernel has its own modes."""
    be = resolve_backend(backend, H, family="ncc")
    if be == "triton":
        launch = load_launcher("ncc", "ncc_triton")
        return launch(H, means, kept_ids, W, b, all_classes=all_classes)
    return ncc_torch(H, means, kept_ids, W, b, block=block, all_classes=all_classes, precision=precision)


def _as_kept_mask(kept: torch.Tensor, n_classes: int) -> torch.Tensor:
    kept = torch.as_tensor(kept)
    if kept.dtype == torch.bool:
        if kept.shape != (n_classes,):
            raise UsageError(f"NCCStats: kept mask must have shape [{n_classes}], got {tuple(kept.shape)}")
        return kept.cpu()
    ids = kept.reshape(-1).to(torch.int64).cpu()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= n_classes):
        raise UsageError(f"NCCStats: kept ids must lie in [0, {n_classes})")
    m = torch.zeros(n_classes, dtype=torch.bool)
    m[ids] = True
    return m


class NCCStats:
    """Per-class NC4 decisions over validation features.

    NCCStats(n_classes, means, kept, W, b=None, all_classes=False): means [C, d] (or [K, d] for the
    kept classes), kept a bool mask [C] or class ids, W [C, d], b [C] or None.
    update(H_val, Y_val, backend="auto"): only positions whose label is kept count.
    hits [C], totals [C] (int64), agreement (float, None when no position counted),
    merge / save / load like ClassStats (means and W are not stored: `load(path, means=..., W=...)`
    to continue updating).
    all_classes=True (means: the full [C, d] table): the same search also decides over all C
    class means (the paper's NC4) into hits_all [C] / agreement_all; None otherwise (and for states
    saved without it).
    """

    def __init__(
        self, n_classes: int, means: torch.Tensor | None, kept, W: torch.Tensor | None, b=None, *,
        all_classes: bool = False,
    ) -> None:
        self.n_classes = validate.integer("NCCStats: n_classes", n_classes, min=1)
        self.kept = _as_kept_mask(kept, self.n_classes)
        self.kept_ids = self.kept.nonzero().squeeze(1)
        self.hits = torch.zeros(self.n_classes, dtype=torch.int64)
        self.totals = torch.zeros(self.n_classes, dtype=torch.int64)
        self.hits_all = torch.zeros(self.n_classes, dtype=torch.int64) if all_classes else None
        self.meta: dict[str, Any] = {}
        self._means = None
        self._all_means = None
        self.W = None
        self.b = None
        if means is not None or W is not None:
            self.bind(means, W, b)

    @property
    def all_classes(self) -> bool:
        """Whether the decisions over all C class means (hits_all) are accumulated."""
        return self.hits_all is not None

    def bind(self, means: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None = None) -> NCCStats:
        """Attach the means and classifier needed by `update`."""
        if means is None or W is None:
            raise UsageError("NCCStats: both means and W are needed to update")
        means, W, b = as_tensor(means, "NCCStats: means"), as_tensor(W, "NCCStats: W"), as_tensor(b, "NCCStats: b")
        if W.dim() != 2 or W.shape[0] != self.n_classes:
            raise UsageError(f"NCCStats: W must be [{self.n_classes}, d], got {tuple(W.shape)}")
        K = int(self.kept_ids.numel())
        if means.dim() != 2 or means.shape[1] != W.shape[1] or means.shape[0] not in (K, self.n_classes):
            raise UsageError(f"NCCStats: means must be [{self.n_classes} or {K}, {W.shape[1]}], "
                             f"got {tuple(means.shape)}")
        if self.all_classes and means.shape[0] != self.n_classes:
            raise UsageError(
                f"NCCStats: the all-class decisions need the full means table [{self.n_classes}, {W.shape[1]}], "
                f"got {tuple(means.shape)}"
            )
        mk = means if means.shape[0] == K else means[self.kept_ids.to(means.device)]
        if not bool(torch.isfinite(mk).all()):
            raise DataError("NCCStats: the kept class means contain non-finite values")
        fp = tensor_fingerprint(mk)
        if self.meta.get("means_fingerprint", fp) != fp:
            raise DataError("NCCStats: these means differ from the ones the stored decisions were made with")
        if self.all_classes:
            if not bool(torch.isfinite(means).all()):
                raise DataError("NCCStats: the class means contain non-finite values")
            fpa = tensor_fingerprint(means)
            if self.meta.get("all_means_fingerprint", fpa) != fpa:
                raise DataError("NCCStats: these means differ from the ones the stored decisions were made with")
            self.meta["all_means_fingerprint"] = fpa
            self._all_means = means
        self.meta["means_fingerprint"] = fp
        self._means = mk
        self.W = W
        self.b = b
        return self

    def update(self, H_val: torch.Tensor, Y_val: torch.Tensor, backend: str = "auto") -> NCCStats:
        if self._means is None:
            raise UsageError("NCCStats.update: no means / classifier bound (construct with them or call bind())")
        H_val, Y_val = as_tensor(H_val, "NCCStats.update: H_val"), as_tensor(Y_val, "NCCStats.update: Y_val")
        if H_val.dim() != 2 or Y_val.dim() != 1 or Y_val.numel() != H_val.shape[0]:
            raise UsageError(f"NCCStats.update: H_val [N, d] and Y_val [N] expected, "
                             f"got {tuple(H_val.shape)}, {tuple(Y_val.shape)}")
        if Y_val.numel() == 0:
            return self
        dev = self.W.device
        Y = Y_val.to(dev, torch.int64)
        lo, hi = int(Y.min()), int(Y.max())
        if lo < 0 or hi >= self.n_classes:
            raise DataError(f"NCCStats.update: labels must lie in [0, {self.n_classes}), got range [{lo}, {hi}]")
        sel = self.kept.to(dev)[Y]
        if not bool(sel.all()):
            H_val = H_val.to(dev)[sel]
            Y = Y[sel]
        if Y.numel() == 0:
            return self
        H = H_val.to(dev)
        if not H.is_floating_point():
            if H.dtype == torch.bool or H.is_complex():
                raise UsageError(f"NCCStats.update: H_val must be real numbers, got {H.dtype}")
            H = H.to(F64)  # integer features (exact up to 2^53)
        if not bool(torch.isfinite(H).all()):
            raise DataError("NCCStats.update: validation features contain non-finite values")
        Yc = Y.cpu()
        if self.all_classes:
            ncc, lm, ncc_all = ncc_predict(
                H, self._all_means.to(dev), self.kept_ids.to(dev), self.W, self.b, backend=backend, all_classes=True
            )
            hit_all = (ncc_all == lm).to(F64).cpu()
            self.hits_all += torch.bincount(Yc, weights=hit_all, minlength=self.n_classes).round().to(torch.int64)
        else:
            ncc, lm = ncc_predict(H, self._means.to(dev), self.kept_ids.to(dev), self.W, self.b, backend=backend)
        hit = (ncc == lm).to(torch.int64)
        self.totals += torch.bincount(Yc, minlength=self.n_classes)
        self.hits += torch.bincount(Yc, weights=hit.cpu().to(F64), minlength=self.n_classes).round().to(torch.int64)
        return self

    @property
    def agreement(self) -> float | None:
        t = int(self.totals.sum())
        return None if t == 0 else int(self.hits.sum()) / t

    @property
    def agreement_all(self) -> float | None:
        """Σhits_all / Σtotals (NC4 over all C class means); None without all-class decisions."""
        t = int(self.totals.sum())
        return None if t == 0 or self.hits_all is None else int(self.hits_all.sum()) / t

    def merge(self, other: NCCStats) -> NCCStats:
        if not isinstance(other, NCCStats) or other.n_classes != self.n_classes:
            raise DataError("NCCStats.merge: different number of classes")
        if not torch.equal(other.kept, self.kept):
            raise DataError("NCCStats.merge: the two accumulators use different kept-class sets")
        for key in ("means_fingerprint", "all_means_fingerprint"):
            a, b = self.meta.get(key), other.meta.get(key)
            if a and b and a != b:
                raise DataError("NCCStats.merge: the two accumulators used different class means")
        if self.all_classes != other.all_classes:
            raise DataError("NCCStats.merge: one accumulator has the all-class decisions (hits_all), the other not")
        self.hits += other.hits
        self.totals += other.totals
        if self.all_classes:
            self.hits_all += other.hits_all
        return self

    def all_reduce(self, group=None) -> NCCStats:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise UsageError("NCCStats.all_reduce: torch.distributed is not initialised (init_process_group first)")
        dev = self.W.device if self.W is not None else torch.device("cpu")
        parts = [self.hits, self.totals] + ([self.hits_all] if self.all_classes else [])
        t = torch.cat(parts).to(dev)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        t = t.cpu()
        C = self.n_classes
        self.hits, self.totals = t[:C].clone(), t[C : 2 * C].clone()
        if self.all_classes:
            self.hits_all = t[2 * C :].clone()
        return self

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write the decisions (hits, totals, kept mask; `meta` merged into `.meta`) atomically as
        safetensors; means and W are not stored. Layout: lcfast.stats.state_file."""
        if meta:
            self.meta.update(meta)
        return state_file.save_ncc_stats(self, path)

    @classmethod
    def load(cls, path, means=None, W=None, b=None, expect: dict[str, Any] | None = None) -> NCCStats:
        """Read a state written by `save` (DataError naming the file when it is not one or its
        metadata does not match `expect`); pass `means` and `W` to continue updating."""
        st = state_file.load_ncc_stats(cls, path, expect)
        if means is not None or W is not None:
            st.bind(means, W, b)
        return st
