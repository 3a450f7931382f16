"""lcfast: fast neural-collapse measurement for causal language models.

The public API is imported lazily so that `lcfast --help` does not pay for importing torch.

    lcfast.TokenShard, lcfast.tokenize_files, lcfast.count_tokens   token engine (Rust core)
    lcfast.load_model, lcfast.features                             a run's (or transformers) model; its
                                                                   head inputs H and labels Y over a shard
    lcfast.ClassStats                                              per-class accumulators
    lcfast.measure_embeddings, lcfast.measure_stats                every NC metric (docs/metrics.md)
    lcfast.NCTracker                                               NC metrics inside any training loop
                                                                   (lcfast.integrations.transformers: Trainer)
    lcfast.per_class                                               per class: context entropy beside NC
"""

from __future__ import annotations

from lcfast._lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "TokenShard": "lcfast.data.shards",
    "tokenize_files": "lcfast.data.tokenize",
    "count_tokens": "lcfast.data.counts",
    "load_model": "lcfast.model.features",
    "features": "lcfast.model.features",
    "ClassStats": "lcfast.stats.classstats",
    "NCCStats": "lcfast.stats.ncc",
    "NCTracker": "lcfast.tracking",
    "measure_embeddings": "lcfast.metrics.embeddings",
    "measure_stats": "lcfast.metrics.measure",
    "per_class": "lcfast.pipeline.measure",
    "DataError": "lcfast.errors",
    "UsageError": "lcfast.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


__getattr__ = lazy_getattr("lcfast", _LAZY)
