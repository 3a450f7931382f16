"""Naive PyTorch twins: the obvious implementations (one-hot matmuls, full C×C grids, the full B×C
distance matrix), in float64. Small and readable on purpose: tests use them as references, and
`lcfast bench` times the fast paths against them. Memory is O(B·C) / O(C²) — small inputs only.
"""

from __future__ import annotations

import math

import torch

from lcfast.backend import DEGENERATE_TOL, Moments, PairwiseSums

F64 = torch.float64

__all__ = [
    "class_stats_naive",
    "two_pass_naive",
    "pairwise_naive",
    "ncc_naive",
    "measure_embeddings_naive",
]


def class_stats_naive(H, Y, n_classes, shift=None, centers=None):
    """(counts, sums, sqsums) like class_stats_torch, through a B×C one-hot matrix."""
    H = H.to(F64)
    oh = torch.nn.functional.one_hot(Y.to(torch.int64), n_classes).to(F64)  # B×C
    X = H if shift is None else (H - (shift.to(F64) if shift.dim() == 1 else oh @ shift.to(F64)))
    Dv = X if centers is None else H - oh @ centers.to(F64)
    return oh.sum(0), oh.T @ X, oh.T @ (Dv * Dv).sum(1)


def two_pass_naive(H, Y, n_classes):
    """Exact two-pass reference: (counts, means, variances, within-class covariance Σ_W over all
    samples) with one-hot matmuls; variances are (1/n_c) Σ‖h − μ_c‖² (0 for unseen classes)."""
    H = H.to(F64)
    oh = torch.nn.functional.one_hot(Y.to(torch.int64), n_classes).to(F64)
    n = oh.sum(0)
    mu = (oh.T @ H) / n.clamp_min(1)[:, None]
    D = H - oh @ mu
    var = (oh.T @ (D * D).sum(1)) / n.clamp_min(1)
    cov = D.T @ D / H.shape[0]
    return n, mu, var, cov


def _pair_values(M, var, cdnv_power, tol, exact=True):
    """Full C×C grids of dist², cos, log-kernel, cdnv, and the degenerate / upper-triangle masks."""
    M = M.to(F64)
    var = var.to(F64)
    C = M.shape[0]
    n2 = (M * M).sum(1)
    if exact:  # materialise all differences: C×C×d
        diff = M[:, None, :] - M[None, :, :]
        dist2 = (diff * diff).sum(-1)
    else:
        G = M @ M.T
        dist2 = n2[:, None] + n2[None, :] - 2 * G
    nrm = n2.sqrt()
    Mh = M / nrm.clamp_min(1e-300)[:, None]
    if exact:
        dh = Mh[:, None, :] - Mh[None, :, :]
        dhat2 = (dh * dh).sum(-1)
    else:
        dhat2 = 2 - 2 * (Mh @ Mh.T)
    cos = 1 - dhat2 / 2
    scale = float(n2.max()) if C else 0.0
    zero = n2 <= tol * scale if scale > 0 else torch.ones(C, dtype=torch.bool)
    deg = (dist2 <= tol * (n2[:, None] + n2[None, :])) | (dhat2 <= 2 * tol) | zero[:, None] | zero[None, :]
    upper = torch.ones(C, C, dtype=torch.bool).triu(1)
    cdnv = (var[:, None] + var[None, :]) / (2 * dist2.clamp_min(0) ** cdnv_power)
    logk = -0.5 * torch.log(dhat2)
    return dist2, cos, logk, cdnv, deg, upper


def _debiased_grid(dist2, var, counts, cdnv_power):
    """C×C grids of the debiased CDNV (s²_i + s²_j)/(2 (dist² − a_i − a_j)^p) and of 'corrected
    distance > 0', written out from the definition: s²_c = σ̂²_c n_c/(n_c − 1), a_c = s²_c/n_c;
    a class with n_c < 2 has no variance estimate (its pairs never count as positive)."""
    var = var.to(F64)
    n = counts.to(F64)
    ok_n = n >= 2
    s2 = torch.zeros_like(var)
    a = torch.zeros_like(var)
    s2[ok_n] = var[ok_n] * n[ok_n] / (n[ok_n] - 1)
    a[ok_n] = s2[ok_n] / n[ok_n]
    dc = dist2 - a[:, None] - a[None, :]
    pos = (dc > 0) & ok_n[:, None] & ok_n[None, :]
    val = (s2[:, None] + s2[None, :]) / (2 * torch.where(pos, dc, torch.ones_like(dc)) ** cdnv_power)
    return val, pos


def pairwise_naive(M, var, cdnv_power=1.0, tol=None, exact=True, raw_dot=False, counts=None) -> PairwiseSums:
    """PairwiseSums from full C×C grids (exact=True: differences materialised, C×C×d);
    raw_dot=True: also the moments of ⟨m_c, m_c'⟩ over every pair c < c' (the full Gram's upper triangle);
    counts (n_c): also the debiased CDNV over non-degenerate pairs with a positive corrected distance."""
    tol = DEGENERATE_TOL if tol is None else tol
    M = M.to(F64)
    C = M.shape[0]
    out = PairwiseSums(n_classes=C)
    G = M @ M.T
    out.gram_sum, out.gram_sq_sum, out.gram_trace = float(G.sum()), float((G * G).sum()), float(G.trace())
    dist2, cos, logk, cdnv, deg, upper = _pair_values(M, var, cdnv_power, tol, exact)
    ok = upper & ~deg
    out.degenerate = int((upper & deg).sum())
    if counts is not None:
        val, pos = _debiased_grid(dist2, var, counts, cdnv_power)
        out.cdnv_debiased = Moments.of(val[ok & pos])
        out.nonpositive = int((ok & ~pos).sum())
    out.cdnv, out.cos, out.logk = Moments.of(cdnv[ok]), Moments.of(cos[ok]), Moments.of(logk[ok])
    if raw_dot:
        out.dot = Moments.of(G[upper])
    sym = ok | ok.T
    out.row_cdnv_sum = torch.where(sym, cdnv, torch.zeros((), dtype=F64)).sum(1)
    out.row_cos_sum = torch.where(sym, cos, torch.zeros((), dtype=F64)).sum(1)
    out.row_count = sym.sum(1)
    return out


def ncc_naive(H, means, kept_ids, W, b=None, all_classes=False):
    """(ncc_pred, lm_pred) through the full B×K distance matrix and B×C logits; all_classes=True
    (means: the full [C, d] table) adds ncc_all_pred, the argmin over the full B×C distance matrix."""
    H = H.to(F64)
    kept_ids = kept_ids.to(torch.int64)
    mu = means.to(F64)
    full = mu
    if mu.shape[0] != kept_ids.numel() or mu.shape[0] == W.shape[0]:
        mu = mu[kept_ids]
    dist = (H * H).sum(1, keepdim=True) - 2 * H @ mu.T + (mu * mu).sum(1)  # the full B×K matrix
    logits = H @ W.to(F64).T
    if b is not None:
        logits = logits + b.to(F64)
    if all_classes:
        dall = (H * H).sum(1, keepdim=True) - 2 * H @ full.T + (full * full).sum(1)  # B×C
        return kept_ids[dist.argmin(1)], logits.argmax(1), dall.argmin(1)
    return kept_ids[dist.argmin(1)], logits.argmax(1)


def _etf_dev(A):
    C = A.shape[0]
    E = (torch.eye(C, dtype=F64) - torch.full((C, C), 1.0 / C, dtype=F64)) / math.sqrt(C - 1)
    return float(torch.linalg.norm(A / torch.linalg.norm(A) - E))


def _cv(x):
    m = float(x.mean())
    return float(x.std(correction=0)) / m if m != 0 else None


def measure_embeddings_naive(H, Y, W=None, b=None, H_val=None, Y_val=None, min_count=1, cdnv_power=1.0, tol=None):
    """Every canonical metric by brute force (float64, dense C×C and B×C matrices)."""
    tol = DEGENERATE_TOL if tol is None else tol
    H = H.to(F64)
    Y = Y.to(torch.int64)
    C_all = int(W.shape[0]) if W is not None else int(Y.max()) + 1
    n, mu, var, _ = two_pass_naive(H, Y, C_all)
    kept = n >= min_count
    ids = kept.nonzero().squeeze(1)
    C = int(ids.numel())
    sel = kept[Y]
    Hk, Yk = H[sel], Y[sel]
    N = int(sel.sum())
    mu_k, var_k, n_k = mu[ids], var[ids], n[ids]
    muG = mu_k.mean(0)
    M = mu_k - muG
    r = {"n_classes": C, "n_samples": N, "n_positions": int(H.shape[0])}
    # NC1
    trW = float((n_k * var_k).sum() / N)
    trB = float((M * M).sum() / C)
    r["nc1_trace_ratio"] = trW / trB if trB > 0 else None
    # unbiased traces: ddof-1 variances; E Σ_c ‖m̂_c‖² = Σ_c ‖m_c‖² + (1 − 1/C) Σ_c σ²_c/n_c
    r["nc1_trace_ratio_debiased"] = None
    if trB > 0 and bool((n_k >= 2).all()):
        s2 = var_k * n_k / (n_k - 1)
        trB_d = (float((M * M).sum()) - (1 - 1 / C) * float((s2 / n_k).sum())) / C
        r["nc1_trace_ratio_debiased"] = float((n_k * s2).sum()) / N / trB_d if trB_d > 0 else None
    D = Hk - mu[Yk]
    SW = D.T @ D / N
    SB = M.T @ M / C
    r["nc1_pinv"] = float(torch.trace(SW @ torch.linalg.pinv(SB, hermitian=True)) / C)
    dist2, cos, logk, cdnv, deg, upper = _pair_values(M, var_k, cdnv_power, tol, exact=True)
    ok = upper & ~deg
    r["degenerate_pairs"] = int((upper & deg).sum())
    has_pairs = bool(ok.any())
    r["nc1_cdnv"] = float(cdnv[ok].mean()) if has_pairs else None
    dval, dpos = _debiased_grid(dist2, var_k, n_k, cdnv_power)
    r["nc1_cdnv_debiased"] = float(dval[ok & dpos].mean()) if bool((ok & dpos).any()) else None
    r["nc1_cdnv_debiased_nonpositive_pairs"] = int((ok & ~dpos).sum())
    # NC2
    norms = M.norm(dim=1)
    r["nc2_norm_mean"] = float(norms.mean())
    r["nc2_norm_cov"] = _cv(norms)
    nzn = norms > math.sqrt(tol) * float(norms.max())
    r["nc2_lognorm_var"] = float(norms[nzn].log().var(correction=0)) if bool(nzn.any()) else None
    r["nc2_interference_mean"] = float(cos[ok].mean()) if has_pairs else None
    r["nc2_interference_var"] = float(cos[ok].var(correction=0)) if has_pairs else None
    r["nc2_etf_error"] = _etf_dev(M @ M.T) if C >= 2 else None
    r["gnc2_log_mean"] = float(logk[ok].mean()) if has_pairs else None
    r["gnc2_log_var"] = float(logk[ok].var(correction=0)) if has_pairs else None
    # NC3
    if W is not None:
        Wk = W.to(F64)[ids]
        wn = Wk.norm(dim=1)
        good = (wn > 0) & nzn
        cw = (Wk * M).sum(1)[good] / (wn[good] * norms[good])
        r["nc3_dual_cos_mean"] = float(cw.mean())
        r["nc3_dual_cos_var"] = float(cw.var(correction=0))
        r["unc3"] = _cv(cw)
        r["nc3_dual_error"] = _etf_dev(Wk @ M.T) if C >= 2 else None
    else:
        for k in ("nc3_dual_cos_mean", "nc3_dual_cos_var", "unc3", "nc3_dual_error"):
            r[k] = None
    # NC4
    if W is not None and H_val is not None and Y_val is not None:
        sv = kept[Y_val.to(torch.int64)]
        if bool(sv.any()):
            ncc, lm = ncc_naive(H_val.to(F64)[sv], mu_k, ids, W, b)
            r["nc4_agreement"] = float((ncc == lm).to(F64).mean())
        else:
            r["nc4_agreement"] = None
    else:
        r["nc4_agreement"] = None
    return r
