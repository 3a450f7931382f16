"""lcfast.stats: accumulators and their torch primitives.

    ClassStats, class_stats_torch        per-class counts / sums / squared deviations (classstats.py)
    NCCStats, ncc_torch                  NC4 decisions (ncc.py)
    pairwise_torch, pairwise_sweep       blocked sweep over class pairs (pairwise.py)
    ClassStats / NCCStats state files    safetensors layout, checks on load, fingerprints (state_file.py)
    naive.*                              the naive twins (tests, bench)
    Moments, PairwiseSums, DEGENERATE_TOL  re-exported from lcfast.backend (shared with the kernels)

Imported lazily: `import lcfast.stats` alone imports no submodule.
"""

from __future__ import annotations

from lcfast._lazy import lazy_getattr

_LAZY = {
    "ClassStats": "lcfast.stats.classstats",
    "class_stats_torch": "lcfast.stats.classstats",
    "NCCStats": "lcfast.stats.ncc",
    "ncc_torch": "lcfast.stats.ncc",
    "ncc_predict": "lcfast.stats.ncc",
    "pairwise_torch": "lcfast.stats.pairwise",
    "pairwise_sweep": "lcfast.stats.pairwise",
    "DEGENERATE_TOL": "lcfast.backend",
    "Moments": "lcfast.backend",
    "PairwiseSums": "lcfast.backend",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY)
