"""lcfast.stats: accumulators and their torch primitives.

    ClassStats, class_stats_torch        per-class counts / sums / squared deviations (classstats.py)
    NCCStats, ncc_torch                  NC4 decisions (ncc.py)
    pairwise_torch, pairwise_sweep       blocked sweep over class pairs (pairwise.py)
    Moments, PairwiseSums                result containers shared with the Triton kernels (results.py)
    naive.*                              the naive twins (tests, bench)

Imported lazily so that `import lcfast.stats.results` (used by the kernels) stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ClassStats": "lcfast.stats.classstats",
    "class_stats_torch": "lcfast.stats.classstats",
    "NCCStats": "lcfast.stats.ncc",
    "ncc_torch": "lcfast.stats.ncc",
    "ncc_predict": "lcfast.stats.ncc",
    "pairwise_torch": "lcfast.stats.pairwise",
    "pairwise_sweep": "lcfast.stats.pairwise",
    "DEGENERATE_TOL": "lcfast.stats.pairwise",
    "Moments": "lcfast.stats.results",
    "PairwiseSums": "lcfast.stats.results",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lcfast.stats' has no attribute {name!r}")
