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
    nc4_hits, nc4_total, nc4_hit_rate   NC4 decisions at validation positions labelled c
                       (hit rate NaN when the class never occurs there or without NC4 data)
A plain pandas DataFrame (int64 / float64 / object columns): `df.to_parquet(path)` works as is.
"""

from __future__ import annotations

import torch

__all__ = ["build_table", "TABLE_COLUMNS"]

F64 = torch.float64

TABLE_COLUMNS = (
    "id", "token", "n", "norm", "var", "dual_cos", "cdnv_mean", "interference_mean", "partners",
    "nc4_hits", "nc4_total", "nc4_hit_rate",
)


def build_table(ids, counts, norms, var, dual, ps, ncc, decode):
    """Assemble the DataFrame from what `measure_all` computed (kept classes only)."""
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
            "nc4_hits": hits.astype(np.int64),
            "nc4_total": tot.astype(np.int64),
            "nc4_hit_rate": rate,
        },
        columns=list(TABLE_COLUMNS),
    )

