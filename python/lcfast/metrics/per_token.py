"""The per-token table (docs/metrics.md): one row per kept class. `measure_all` (lcfast.metrics.measure,
which also offers `per_token_table`) builds it from the sweep of the metrics; this module lays it out.

Columns:
    id                 class (token) id
    token              decoded string (None without a `decode` callable)
    n                  n_c, training positions with this next token
    norm               ‖m_c‖ = ‖μ_c − μ_G‖
    var                σ²_c (population, trace of the class covariance)
    dual_cos           cos(w_c, m_c) (NaN without W, or when ‖w_c‖ or ‖m_c‖ is 0)
    cdnv_mean          mean CDNV against all other kept classes (non-degenerate partners), at the
                       measurement's cdnv_power (2 with profile="paper")
    interference_mean  mean cos(m_c, m_c') against all other kept classes
    partners           number of non-degenerate partners those means are over
    nearest            id of the kept class whose mean μ_c' is nearest to μ_c (Euclidean; the first on ties)
    cdnv_nearest       CDNV against that class, (σ²_c + σ²_c')/(2 (‖μ_c − μ_c'‖²)^p) at the measurement's
                       cdnv_power p (NaN with a single kept class or when the two means coincide)
    nc4_hits, nc4_total, nc4_hit_rate   NC4 decisions at validation positions labelled c
                       (hit rate NaN when the class never occurs there or without NC4 data)
A plain pandas DataFrame (int64 / float64 / object columns): `df.to_parquet(path)` works as is.
"""

from __future__ import annotations

import torch

__all__ = ["build_table", "nearest_class", "TABLE_COLUMNS"]

F64 = torch.float64

TABLE_COLUMNS = (
    "id", "token", "n", "norm", "var", "dual_cos", "cdnv_mean", "interference_mean", "partners",
    "nearest", "cdnv_nearest", "nc4_hits", "nc4_total", "nc4_hit_rate",
)


def build_table(ids, counts, norms, var, dual, ps, ncc, decode, nearest=None):
    """Assemble the DataFrame from what `measure_all` computed (kept classes only); `nearest` is
    (positions into the kept classes int64 [C], CDNV float64 [C]) from `nearest_class`."""
    import numpy as np
    import pandas as pd

    ids_c = ids.cpu()
    C = int(ids_c.numel())
    nan = np.full(C, np.nan)
    if ps is not None and ps.row_count is not None:
        cnt = ps.row_count.cpu().to(F64)
        safe = cnt.clamp_min(1)
        cdnv_mean = torch.where(cnt > 0, ps.row_cdnv_sum.cpu() / safe, torch.nan).numpy()
        inter_mean = torch.where(cnt > 0, ps.row_cos_sum.cpu() / safe, torch.nan).numpy()
        partners = ps.row_count.cpu().to(torch.int64).numpy()
    else:
        cdnv_mean, inter_mean, partners = nan, nan.copy(), np.zeros(C, dtype=np.int64)
    if ncc is not None:
        hits = ncc.hits[ids_c].numpy()
        tot = ncc.totals[ids_c].numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(tot > 0, hits / np.maximum(tot, 1), np.nan)
    else:
        hits = np.zeros(C, dtype=np.int64)
        tot = np.zeros(C, dtype=np.int64)
        rate = nan.copy()
    if nearest is not None:
        pos, cdnv_near = nearest[0].cpu(), nearest[1].cpu().to(F64).numpy()
        near = np.where(pos.numpy() >= 0, ids_c[pos.clamp_min(0)].numpy(), -1).astype(np.int64)
    else:
        near, cdnv_near = np.full(C, -1, dtype=np.int64), nan.copy()
    tokens = [decode(int(i)) for i in ids_c.tolist()] if decode is not None else [None] * C
    return pd.DataFrame(
        {
            "id": ids_c.numpy().astype(np.int64),
            "token": pd.Series(tokens, dtype=object),
            "n": counts[ids_c].numpy().astype(np.int64),
            "norm": norms.cpu().to(F64).numpy(),
            "var": var.cpu().to(F64).numpy(),
            "dual_cos": dual.cpu().numpy() if dual is not None else nan.copy(),
            "cdnv_mean": cdnv_mean,
            "interference_mean": inter_mean,
            "partners": partners,
            "nearest": near,
            "cdnv_nearest": cdnv_near,
            "nc4_hits": hits.astype(np.int64),
            "nc4_total": tot.astype(np.int64),
            "nc4_hit_rate": rate,
        },
        columns=list(TABLE_COLUMNS),
    )



def nearest_class(M: torch.Tensor, var: torch.Tensor, cdnv_power: float, tol: float, block: int = 1024):
    """For each kept class, its nearest other class mean and the CDNV against it.

    M: float64 [C, d] class means (centred or not: only differences matter); var: float64 [C] σ²_c.
    Returns (pos int64 [C] index into the C classes, −1 when C < 2; cdnv float64 [C], NaN when
    C < 2 or ‖μ_c − μ_c'‖² ≤ tol·(‖m_c‖² + ‖m_c'‖²), the degenerate-pair rule of the pairwise sweep).
    Blocks of `block` rows: O(block·C) memory, never the C×C matrix.
    """
    C = int(M.shape[0])
    pos = torch.full((C,), -1, dtype=torch.int64)
    cdnv = torch.full((C,), float("nan"), dtype=F64)
    if C < 2:
        return pos, cdnv
    M = M.to(F64)
    var = var.to(F64)
    n2 = (M * M).sum(1)
    for i in range(0, C, block):
        j = min(C, i + block)
        d2 = (n2[i:j, None] + n2[None, :] - 2.0 * (M[i:j] @ M.T)).clamp_min(0)
        d2[torch.arange(j - i), torch.arange(i, j)] = float("inf")  # not its own nearest
        best, arg = d2.min(1)
        ok = best > tol * (n2[i:j] + n2[arg])
        val = (var[i:j] + var[arg]) / (2.0 * best.pow(cdnv_power))
        pos[i:j] = arg.cpu()
        cdnv[i:j] = torch.where(ok, val, torch.nan).cpu()
    return pos, cdnv
