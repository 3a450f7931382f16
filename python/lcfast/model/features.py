"""Features of a model over a token shard: the LM head's input at every label position of the
shard's first sequential windows, with the labels (the next tokens) — what `lcfast collect` feeds its
accumulators, as arrays for the Python API:

    model = lcfast.load_model("lcfast-demo/work/full/runs/L1_W32_E3_S0")   # or a transformers folder, hf:ORG/NAME
    shard = lcfast.TokenShard("lcfast-demo/work/full/data/train.lcshard")
    H, Y = lcfast.features(model, shard, max_tokens=20_000)   # H [N, d] float32, Y [N] int64 (CPU)

The windows are collect's (`window_batch`: window k covers tokens [kT, kT + T], every label
position once, the last window ragged) and the features are the model's head input (lcfast's
GPT-Neo: its final layer norm; a transformers model: read by a hook on its output embeddings).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from lcfast.errors import DataError, UsageError


def n_windows(shard, T: int, max_tokens: int | None = None) -> int:
    """Sequential windows of length T over `shard`, at most enough for about `max_tokens` positions."""
    n = int(shard.n_seq_windows(T))
    if max_tokens is not None:
        n = min(n, max(1, math.ceil(max_tokens / T)))
    return n


def window_batch(shard, T: int, start: int, count: int, rank: int = 0, world: int = 1):
    """Windows [start, start + count) of `shard` (this rank's block) as
    (x int64 [count, T] model input, y int64 [n] labels of the valid positions, mask bool [count, T]):
    window k holds lengths[k] valid tokens, hence lengths[k] − 1 label positions (the rest is padding)."""
    win, lengths = shard.seq_windows(T, start, count, rank, world)
    win = torch.from_numpy(np.ascontiguousarray(win, dtype=np.int64))
    mask = torch.arange(T)[None, :] < (torch.from_numpy(np.asarray(lengths, dtype=np.int64))[:, None] - 1)
    return win[:, :-1], win[:, 1:][mask], mask


def load_model(model: str | Path, checkpoint: str | int = "last", dtype: str = "float32"):
    """A model to measure, in evaluation mode on the CPU: `model` is a `lcfast train` run (its
    `checkpoint`: an epoch or "last"), a transformers causal-LM folder or `hf:ORG/NAME` from the
    local Hugging Face cache (transformers needed: `pip install 'lcfast[hf]'`). It offers
    `features(idx)`, `lm_head_weight` [C, d] and `lm_head_bias` [C] or None."""
    from lcfast.model.hf import parse_dtype
    from lcfast.model.sources import load_source, resolve_sources

    if str(checkpoint).strip().lower() == "all":
        raise UsageError("load_model: checkpoint: one epoch or 'last', not 'all'")
    (src,) = resolve_sources(model, checkpoint, None, need_data=False)
    return load_source(src, parse_dtype(dtype))


def _context(model) -> int:
    from lcfast.model.hf import MAX_DEFAULT_CONTEXT

    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "context"):  # lcfast's GPT-Neo
        return int(cfg.context)
    ctx = getattr(model, "max_context", None)
    if ctx is None:
        raise UsageError("features: the model's config gives no maximum sequence length: pass context=T")
    return min(int(ctx), MAX_DEFAULT_CONTEXT)


def features(
    model,
    shard,
    *,
    max_tokens: int | None = None,
    checkpoint: str | int = "last",
    context: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H float32 [N, d], Y int64 [N]) on the CPU: the LM head's input at every label position of the
    first windows of `shard` (about `max_tokens` positions; all of the shard by default) and the
    next tokens there.

    model: a loaded model (`load_model`) or what `load_model` takes (then `checkpoint`, `dtype` apply).
    shard: a `TokenShard` or the path of a .lcshard made with the model's tokenizer. context: the
    window length T (default: the model's maximum, at most 2048 for transformers models).
    device: "cpu", "cuda", "cuda:N" or "auto" (the forward runs there)."""
    from lcfast.data.shards import TokenShard

    if not hasattr(model, "features"):
        model = load_model(model, checkpoint, dtype)
    if not isinstance(shard, TokenShard):
        shard = TokenShard(str(shard))
    from lcfast import validate

    if max_tokens is not None:
        max_tokens = validate.integer("max_tokens", max_tokens, min=1)
    batch_size = validate.integer("batch_size", batch_size, min=1)
    C = int(model.lm_head_weight.shape[0])
    if shard.vocab_size > C:
        raise DataError(f"{shard.path}: vocab mismatch: shard vocab {shard.vocab_size}, model {C} classes; "
                        "tokenize with the model's tokenizer")
    if shard.n_tokens < 2:
        raise DataError(f"{shard.path}: {shard.n_tokens} tokens: no label position")
    T = validate.integer("context", context, min=1) if context is not None else _context(model)
    from lcfast.dist import resolve_device

    dev = resolve_device(device)
    model = model.to(dev).eval()
    if hasattr(model, "hf"):  # a transformers model: causal, checked on the first window (as collect does)
        from lcfast.model.hf import check_causal

        x, _, mask = window_batch(shard, T, 0, 1)
        check_causal(model, x[0, : int(mask[0].sum())], int(shard.vocab_size), f"the first window of {shard.path}")
    hs, ys = [], []
    total = n_windows(shard, T, max_tokens)
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            x, y, mask = window_batch(shard, T, start, min(batch_size, total - start))
            hs.append(model.features(x.to(dev))[mask.to(dev)].float().cpu())
            ys.append(y)
    return torch.cat(hs), torch.cat(ys)


__all__ = ["features", "load_model", "n_windows", "window_batch"]
