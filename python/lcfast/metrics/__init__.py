"""lcfast.metrics: every NC metric of docs/metrics.md (measure.py) and the per-token table (per_token.py: its columns).

    measure_embeddings(H, Y, W=None, b=None, H_val=None, Y_val=None, min_count=1, backend="auto", profile="canonical")
    measure_stats(stats, W=None, b=None, ncc=None, min_count=1, backend="auto", profile="canonical")
    measure_all(stats, ...) -> (dict, DataFrame)   both from one pairwise sweep
    per_token_table(stats, ...) -> DataFrame
"""

from __future__ import annotations

from lcfast._lazy import lazy_getattr

_LAZY = {
    "measure_embeddings": "lcfast.metrics.embeddings",
    "measure_stats": "lcfast.metrics.measure",
    "measure_all": "lcfast.metrics.measure",
    "CANONICAL_KEYS": "lcfast.metrics.measure",
    "PAPER_KEYS": "lcfast.metrics.measure",
    "per_token_table": "lcfast.metrics.measure",
    "TABLE_COLUMNS": "lcfast.metrics.per_token",
    "measure_folds": "lcfast.metrics.uncertainty",
    "se_keys": "lcfast.metrics.uncertainty",
    "result_keys": "lcfast.metrics.uncertainty",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
