"""Token frequency, imbalance and context-ambiguity statistics (`lcfast count`).

Counting re-reads the tokens with a parallel Rust histogram (and checks it against the counts
stored in each shard). Ambiguity statistics (for context lengths k = 1..K: the share of
positions whose exact k-token context is followed by more than one distinct next token, and
H(next | context) in bits) are computed in Rust with bounded memory; see rust/src/ambiguity.rs
for the hashing and its collision trade-off. Contexts may span document boundaries (as training
windows do) but never two shards.
"""

from __future__ import annotations

import os
import time

import numpy as np

from lcfast import validate
from lcfast.errors import DataError, UsageError

KS = (1, 10, 100)


def _decoder_for(shard):
    """A decode(id) -> str function from the tokenizer.json beside the shard, if it matches."""
    p = shard.path.parent / "tokenizer.json"
    if not p.is_file():
        return None, None
    try:
        from lcfast.data.shards import _core

        if _core().tokenizer_fingerprint(str(p)) != shard.tokenizer_fingerprint:
            return None, f"{p} does not match the shard's tokenizer fingerprint; tokens not decoded"
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001 - decoding is a nicety: never fail the count on it
        return None, f"{p}: cannot load ({' '.join(str(e).split())[:120]}); tokens not decoded"

    def decode(i: int) -> dict:
        return {"token": tok.decode([i], skip_special_tokens=False), "piece": tok.id_to_token(i)}

    return decode, None


def count_tokens(
    shards,
    ambiguity: int = 0,
    *,
    top: int = 20,
    ks=KS,
    memory_bytes: int = 1 << 30,
    verify: bool = True,
) -> dict:
    """Frequency and imbalance statistics of one or more shards (same tokenizer).

    Args:
        shards: a path, a TokenShard, a directory (its *.lcshard files), or a list of these.
        ambiguity: K >= 1 adds context-ambiguity rows for k = 1..K (0 = none).
        top: number of most frequent tokens to report (decoded with the tokenizer.json beside
            the first shard when its fingerprint matches).
        ks: thresholds for ``classes_ge`` (ids with at least k occurrences).
        memory_bytes: approximate memory for the ambiguity tables (more partitions when lower).
        verify: verify each shard's checksum and id range on open.

    Returns a JSON-able dict: ``shards``, ``n_tokens``, ``n_docs``, ``vocab_size``,
    ``classes_seen``, ``classes_ge`` ({str(k): n}), ``entropy_bits``, ``gini`` (over the
    whole vocabulary), ``gini_seen`` (over ids that occur), ``max_count``, ``top_tokens``
    ([{id, count, share, token, piece}]), ``ambiguity`` ([{k, positions, contexts,
    ambiguous_contexts, ambiguous_positions, ambiguous_share, cond_entropy_bits}]),
    ``ambiguity_info``, ``timing``. The summed counts themselves are ``TokenShard.counts()``.
    """
    from lcfast.data.shards import TokenShard, _core

    core = _core()
    ambiguity = validate.integer("--ambiguity", ambiguity, min=0, max=core.MAX_AMBIGUITY_K)
    top = validate.integer("--top", top, min=0)
    memory_bytes = validate.integer("--memory-mb", memory_bytes, min=1, max=None, what="a number of bytes")
    have, where = validate.available_memory()
    if memory_bytes > have:
        raise UsageError(f"--memory-mb {memory_bytes / 2**20:g}: more than the {validate.fmt_bytes(have)} {where}")
    ks = [int(k) for k in ks]
    if any(k < 1 for k in ks):
        raise UsageError(f"classes_ge thresholds must be >= 1, got {ks}")

    t0 = time.perf_counter()
    opened = [s if isinstance(s, TokenShard) else TokenShard(s, verify=verify) for s in _as_list(shards)]
    first = opened[0]
    for s in opened[1:]:
        if s.vocab_size != first.vocab_size:
            raise DataError(f"{s.path}: vocab_size {s.vocab_size} differs from {first.path} ({first.vocab_size})")
        if s.tokenizer_fingerprint != first.tokenizer_fingerprint:
            raise DataError(f"{s.path}: made with a different tokenizer than {first.path} (fingerprints differ)")

    counts = np.zeros(first.vocab_size, dtype=np.int64)
    for s in opened:
        c = s.recount()
        if not np.array_equal(c, s.counts()):
            raise DataError(f"{s.path}: corrupt shard: stored counts disagree with its tokens")
        counts += c
    t_count = time.perf_counter()

    summ = dict(core.summarize_counts(counts, ks))
    n = int(summ["n_tokens"])
    decode, note = _decoder_for(first)
    top_tokens = []
    for i, c in core.top_k(counts, top):
        row = {"id": int(i), "count": int(c), "share": c / n if n else 0.0}
        if decode is not None:
            row.update(decode(int(i)))
        top_tokens.append(row)

    amb_rows, amb_info = [], None
    if ambiguity:
        rows, info = core.ambiguity([s._shard for s in opened], int(ambiguity), int(memory_bytes))
        amb_rows = [dict(r) for r in rows]
        amb_info = dict(info)
    t_end = time.perf_counter()

    return {
        "shards": [str(s.path) for s in opened],
        "n_tokens": n,
        "n_docs": int(sum(s.n_docs for s in opened)),
        "vocab_size": first.vocab_size,
        "tokenizer_fingerprint": first.tokenizer_fingerprint,
        "classes_seen": int(summ["classes_seen"]),
        "classes_ge": {str(k): int(v) for k, v in dict(summ["classes_ge"]).items()},
        "entropy_bits": float(summ["entropy_bits"]),
        "gini": float(summ["gini"]),
        "gini_seen": float(summ["gini_seen"]),
        "max_count": int(summ["max_count"]),
        "top_tokens": top_tokens,
        "tokenizer": str(first.path.parent / "tokenizer.json") if decode is not None else None,
        "notes": [note] if note else [],
        "ambiguity": amb_rows,
        "ambiguity_info": amb_info,
        "timing": {
            "count_s": round(t_count - t0, 4),
            "total_s": round(t_end - t0, 4),
            "count_tokens_per_s": round(n / max(t_count - t0, 1e-9), 1),
        },
    }


def _as_list(shards) -> list:
    from lcfast.data.shards import TokenShard, expand_shard_paths

    items = [shards] if isinstance(shards, (str, os.PathLike, TokenShard)) else list(shards)
    out = []
    for it in items:
        if isinstance(it, TokenShard):
            out.append(it)
        else:
            out.extend(expand_shard_paths([it]))
    if not out:
        raise UsageError("SHARD: no shard given")
    return out
