"""Per-class context entropy and the per-class table: which classes can collapse (docs/metrics.md).

A token's class cannot shrink to a point if its contexts do not determine it. For a class c and a
context order k, the **context entropy** is

    h_k(c) = E_{t : s[t] = c, t ≥ k} [ H(next | s[t−k..t]) ]          (bits)

the conditional entropy of the next token given the exact k preceding tokens (the empirical
distribution over the shard: H(next | x) = log2 n(x) − Σ_y n(x, y) log2 n(x, y) / n(x)), averaged over
the positions whose label is c. A class that is always predictable from its context has h_k(c) = 0;
one drawn from a distribution with entropy H after its contexts has h_k(c) ≈ H. Weighted by the
positions, the classes' h_k average to the corpus' H(next | context_k) of `lcfast count --ambiguity`
(Rust, rust/src/ambiguity.rs, which only returns that aggregate): Σ_c n_k(c) h_k(c) / Σ_c n_k(c).

Positions and contexts are those of the Rust engine: every t ≥ k of the token stream, contexts
spanning document boundaries (as training windows do). The contexts are numbered exactly (no
hashing): order k's context id is the rank of (order k−1's id, s[t−k]) among the distinct pairs,
so each order costs two sorts of N int64 keys. Memory: about 85 bytes a token at the peak (a
5M-token shard: ~425 MB); time: about 0.15 s a million tokens an order on one core (measured on a
2M-token Zipfian stream, vocabulary 2,048; the demo's 347k-token shard takes 0.4 s for three orders).

`per_class_frame` joins these with the per-token table of `lcfast.metrics.per_token` (NC
statistics of the kept classes) into one row per class that occurs as a label in the shard or is
kept by the measurement — never one lost, never one twice.
"""

from __future__ import annotations

import numpy as np

__all__ = ["context_entropy", "label_counts", "per_class_frame", "PER_CLASS_COLUMNS", "entropy_column"]

#: the NC columns taken from the per-token table (NaN / 0 for classes it does not hold)
_NC_COLUMNS = ("norm", "var", "var_rel", "cdnv_nearest", "nearest", "dual_cos", "nc4_hits", "nc4_total", "nc4_hit_rate")
PER_CLASS_COLUMNS = ("id", "token", "kept", "n", "shard_count")  # then ctx_entropy_1..K, then _NC_COLUMNS


def entropy_column(k: int) -> str:
    """The name of the order-k context-entropy column: ctx_entropy_<k>."""
    return f"ctx_entropy_{int(k)}"


def label_counts(tokens, vocab_size: int) -> np.ndarray:
    """int64 [vocab_size]: occurrences of each id at label positions t ≥ 1 of the stream (every
    position that has a context; what a collection covering the whole shard counts)."""
    s = np.asarray(tokens)
    return np.bincount(s[1:].astype(np.int64), minlength=int(vocab_size)).astype(np.int64)


def context_entropy(tokens, orders: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class context entropy of a token stream for context orders k = 1..`orders`.

    Args:
        tokens: 1-D integer array [N] (a shard's tokens), ids < vocab_size.
        orders: K ≥ 1, the longest context.
        vocab_size: V, the number of classes.

    Returns (h float64 [K, V], npos int64 [K, V]): h[k−1, c] = h_k(c) in bits (module docstring),
    NaN where npos[k−1, c] = 0; npos[k−1, c] = positions t ≥ k with s[t] = c.
    """
    s = np.asarray(tokens).astype(np.int64, copy=False).reshape(-1)
    V, K, N = int(vocab_size), int(orders), int(s.size)
    if K < 1:
        raise ValueError(f"orders must be >= 1, got {orders}")
    if N and (int(s.min()) < 0 or int(s.max()) >= V):
        raise ValueError(f"token ids must lie in [0, {V})")
    h = np.full((K, V), np.nan)
    npos = np.zeros((K, V), dtype=np.int64)
    ctx = None  # context ids of positions t = k..N-1 at the current order k, dense from 0
    for k in range(1, K + 1):
        if N <= k:
            break
        y = s[k:]
        if k == 1:
            ctx = s[:-1]
        else:
            # extend each order-(k−1) context by the token before it; renumber densely so the next
            # key (id · V + token) stays far inside int64 (ids < N, V < 2^24)
            ctx = np.unique(ctx[1:] * V + s[: N - k], return_inverse=True)[1].reshape(-1)
        n_ctx = np.bincount(ctx)
        pairs, pair_n = np.unique(ctx * V + y, return_counts=True)
        pn = pair_n.astype(np.float64)
        # Σ_y n(x,y) log2 n(x,y) per context, then H(next | x) = log2 n(x) − that / n(x)
        s_ctx = np.bincount(pairs // V, weights=pn * np.log2(pn), minlength=n_ctx.size)
        nc = n_ctx.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            h_ctx = np.where(n_ctx > 0, np.log2(np.maximum(nc, 1)) - s_ctx / np.maximum(nc, 1), 0.0)
        # a context followed by one distinct token is exactly 0 bits (log2 n − n log2 n / n rounds to ±1e-15)
        distinct = np.bincount(pairs // V, minlength=n_ctx.size)
        h_ctx = np.where(distinct > 1, np.maximum(h_ctx, 0.0), 0.0)
        cnt = np.bincount(y, minlength=V)
        tot = np.bincount(y, weights=h_ctx[ctx], minlength=V)
        npos[k - 1] = cnt
        with np.errstate(divide="ignore", invalid="ignore"):
            h[k - 1] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return h, npos


def per_class_frame(per_token, h: np.ndarray, shard_count: np.ndarray, decode=None):
    """One row per class: the classes with shard_count > 0 and every class of `per_token`, sorted by id.

    Args:
        per_token: the per-token DataFrame of one measurement (lcfast.metrics.per_token; its `id` are
            token ids), or None (context columns only).
        h: float64 [K, V] from `context_entropy`.
        shard_count: int64 [V], `label_counts` of the same shard.
        decode: id -> token text, for classes the per-token table does not hold (or None).

    Returns a pandas DataFrame with PER_CLASS_COLUMNS, ctx_entropy_1..K (float64 bits), then
    norm, var, var_rel = σ²_c / Tr Σ_B (σ²_c over the mean ‖m_c'‖² of the kept classes: the
    per-class share of nc1_trace_ratio, scale-free), cdnv_nearest, nearest, dual_cos, nc4_hits,
    nc4_total, nc4_hit_rate; `kept` (bool) marks the classes the measurement kept, `n` (int64) is
    their collected train count (0 for the others), `shard_count` the shard's.
    """
    import pandas as pd

    K, V = h.shape
    sc = np.asarray(shard_count, dtype=np.int64)
    pt_ids = np.zeros(0, dtype=np.int64) if per_token is None else per_token["id"].to_numpy(dtype=np.int64)
    if per_token is not None and len(np.unique(pt_ids)) != len(pt_ids):
        raise ValueError("per-token table: a class id appears twice")
    if pt_ids.size and (pt_ids.min() < 0 or pt_ids.max() >= V):
        raise ValueError(f"per-token table: class ids outside [0, {V}) (another tokenizer's shard?)")
    ids = np.union1d(np.flatnonzero(sc > 0), pt_ids).astype(np.int64)
    out = pd.DataFrame({"id": ids})
    if per_token is not None:
        pt = per_token.copy()
        tr_b = float(np.mean(pt["norm"].to_numpy(dtype=np.float64) ** 2)) if len(pt) else np.nan
        pt["var_rel"] = pt["var"] / tr_b if tr_b > 0 else np.nan
        cols = ["id", "token", "n"] + [c for c in _NC_COLUMNS if c in pt.columns]
        out = out.merge(pt[cols], on="id", how="left", validate="one_to_one")
        out["kept"] = out["id"].isin(pt_ids)
    else:
        out["token"], out["n"], out["kept"] = None, 0, False
    for c in _NC_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    out["n"] = out["n"].fillna(0).astype(np.int64)
    for c in ("nc4_hits", "nc4_total"):
        out[c] = out[c].fillna(0).astype(np.int64)
    out["nearest"] = out["nearest"].astype("Int64")
    if decode is not None:
        miss = out["token"].isna()
        out.loc[miss, "token"] = [decode(int(i)) for i in out.loc[miss, "id"]]
    out["token"] = out["token"].astype(object)
    out["shard_count"] = sc[ids]
    ent = [entropy_column(k) for k in range(1, K + 1)]
    for k, name in enumerate(ent):
        out[name] = h[k, ids]
    return out[list(PER_CLASS_COLUMNS) + ent + list(_NC_COLUMNS)]
