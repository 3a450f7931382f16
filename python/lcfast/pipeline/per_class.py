"""The per-class table of a measurement: context entropy joined with per-class NC (docs/metrics.md).

`lcfast measure` writes `out_dir/per_class.parquet` beside measurements.csv: one row per
(model, checkpoint, class), the class's context entropy at orders 1..K over the collection's train
shard (`lcfast.metrics.per_class`) beside its NC statistics from the per-token table.
`lcfast.per_class(paths)` (lcfast.pipeline.measure.per_class: it measures first) returns the same
frame for collections without writing anything.

The context entropy is a property of the shard, so it is computed once per train shard (by its
fingerprint) however many checkpoints were collected on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lcfast import validate
from lcfast.errors import DataError

PER_CLASS_FILE = "per_class.parquet"
#: peak bytes per token of `context_entropy` (measured: 83 on a 2M-token Zipfian shard, orders 1..3)
BYTES_PER_TOKEN = 90
DEFAULT_ORDERS = 3
MAX_ORDERS = 16
#: columns that say which measurement a row belongs to, before the per-class columns
KEY_COLUMNS = ("model", "checkpoint", "epochs", "n_params")


class ShardEntropy:
    """Context entropies of train shards, computed once per shard fingerprint."""

    def __init__(self, orders: int) -> None:
        self.orders = int(orders)
        self._done: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def of(self, path: str | Path, fingerprint: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(h float64 [K, V], shard_count int64 [V]) of the shard at `path`; DataError when it is
        missing or is no longer the shard that was collected (another fingerprint)."""
        from lcfast.data.shards import TokenShard
        from lcfast.metrics.per_class import context_entropy, label_counts

        p = Path(path)
        if not p.is_file():
            raise DataError(f"{p}: the collection's train shard is gone (needed for the context entropy)")
        shard = TokenShard(p)
        fp = str(shard.fingerprint)
        if fingerprint is not None and fp != str(fingerprint):
            raise DataError(f"{p}: changed since collection (fingerprint {fp} != {fingerprint})")
        if fp not in self._done:
            need = BYTES_PER_TOKEN * int(shard.n_tokens)
            have, where = validate.available_memory()
            if need > have // 2:  # a note beats an out-of-memory kill in the middle of `lcfast measure`
                raise DataError(f"{p}: the context entropy of {int(shard.n_tokens):,} tokens needs about "
                                f"{validate.fmt_bytes(need)}, more than half the {validate.fmt_bytes(have)} {where}; "
                                "measure with --context-orders 0, or on a smaller shard")
            toks = np.asarray(shard.tokens)
            h, _ = context_entropy(toks, self.orders, shard.vocab_size)
            self._done[fp] = (h, label_counts(toks, shard.vocab_size))
        return self._done[fp]


def collection_frame(cdir: str | Path, row: dict, table, entropy: ShardEntropy):
    """The per-class rows of one measured collection: KEY_COLUMNS from its measurements row, then
    `lcfast.metrics.per_class.per_class_frame` of its per-token `table` and its train shard.
    Returns (DataFrame, notes)."""
    from lcfast.data.datadir import token_decoder
    from lcfast.metrics.per_class import per_class_frame
    from lcfast.pipeline.collect.summary import CollectSummary

    s = CollectSummary.read(cdir)
    train = s.shards.get("train")
    if not train:
        raise DataError(f"{cdir}: collect.json names no train shard (collected by an older lcfast?)")
    h, sc = entropy.of(train.path, train.fingerprint)
    notes = []
    decode = token_decoder(s.tokenizer)
    df = per_class_frame(table, h, sc, decode)
    collected = int(s.pass_tokens("train") or 0)
    if collected and collected != int(sc.sum()):
        notes.append(f"{row['model']}/{row['checkpoint']}: the train pass covered {collected:,} of the shard's "
                     f"{int(sc.sum()):,} label positions (--max-tokens): per-class n < shard_count")
    for i, k in enumerate(KEY_COLUMNS):
        df.insert(i, k, row.get(k))
    return df, notes
