"""Features of a model over a token shard: the LM head's input at every label position of the
shard's sequential windows (all of them, or a seeded uniform random sample of them), with the labels
(the next tokens) — what `lcfast collect` feeds its accumulators, as arrays for the Python API:

    model = lcfast.load_model("lcfast-demo/work/full/runs/L1_W32_E3_S0")   # or a transformers folder, hf:ORG/NAME
    shard = lcfast.TokenShard("lcfast-demo/work/full/data/train.lcshard")
    H, Y = lcfast.features(model, shard, max_tokens=20_000)   # H [N, d] float32, Y [N] int64 (CPU)

The windows are collect's (`window_batch`: window k covers tokens [kT, kT + T], every label
position once, the last window ragged) and the features are the model's head input (lcfast's
GPT-Neo: its final layer norm; a transformers model: read by a hook on its output embeddings).

Which windows (`WindowPlan`): every window of the shard, or with `max_tokens=N` the ⌈N/T⌉ windows
of smallest hash h(seed, k) — a uniform random sample without replacement over the whole shard, not
its first documents (consecutive windows share documents, so a prefix is a handful of topics). The
hash is splitmix64 of (seed, window index), a pure function, so every torchrun rank, `--shard` part
and resumed run computes the same sample and the same order. The same order deals the windows
into K folds (`fold = rank in hash order mod K`: sizes differ by at most one window), which
`collect --folds K` accumulates side by side for standard errors (docs/metrics.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from lcfast.errors import DataError, UsageError

#: the seed of the window sample and the folds when none is given (collect's --seed default)
DEFAULT_SEED = 0
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def n_windows(shard, T: int, max_tokens: int | None = None) -> int:
    """Sequential windows of length T over `shard`, at most enough for about `max_tokens` positions."""
    n = int(shard.n_seq_windows(T))
    if max_tokens is not None:
        n = min(n, max(1, math.ceil(max_tokens / T)))
    return n


def window_hash(seed: int, ids: np.ndarray) -> np.ndarray:
    """splitmix64(splitmix64(seed) + k) of window indices `ids` (int64 [n]) → uint64 [n]: a pure
    function of (seed, k), uniform over 64 bits, the same on every machine and numpy version."""
    def mix(z: np.ndarray) -> np.ndarray:
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))

    with np.errstate(over="ignore"):
        s = mix(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
        return mix((np.asarray(ids, dtype=np.int64).astype(np.uint64) + s) & _MASK64)


class WindowPlan:
    """The windows a pass visits and the fold of each (see the module docstring).

    ids int64 [n] (global window indices: fold 0's in shard order, then fold 1's, …), folds int64 [n]
    in [0, K), ascending. `block(rank, world)` is a rank's contiguous share of `ids` (the split
    torchrun and `--shard` use; without a sample it is the shard's own `rank_block`)."""

    def __init__(self, n_total: int, max_windows: int | None = None, seed: int = DEFAULT_SEED, folds: int = 1):
        self.n_total, self.seed, self.n_folds = int(n_total), int(seed), int(folds)
        self.sampled = max_windows is not None and int(max_windows) < self.n_total
        all_ids = np.arange(self.n_total, dtype=np.int64)
        if not self.sampled and self.n_folds == 1:
            self.ids, self.folds = all_ids, np.zeros(self.n_total, dtype=np.int64)
            return
        order = np.argsort(window_hash(self.seed, all_ids), kind="stable")  # ties (never seen) to the lower id
        if self.sampled:
            order = order[: int(max_windows)]
        fold_in_order = np.arange(order.size, dtype=np.int64) % self.n_folds
        # fold by fold, each in shard order: a batch then holds windows of one fold (but where one fold
        # ends), so it updates as many accumulator rows as without folds — not K times as many
        # scattered over K times the memory (measured: the class statistics 2× slower at K = 8)
        keep = np.lexsort((order, fold_in_order))
        self.ids, self.folds = order[keep], fold_in_order[keep]

    def __len__(self) -> int:
        return int(self.ids.size)

    def block(self, rank: int = 0, world: int = 1) -> tuple[int, int]:
        """(first, count): rank's contiguous share of the plan's windows."""
        n, world, rank = len(self), int(world), int(rank)
        base, rem = divmod(n, world)
        return rank * base + min(rank, rem), base + int(rank < rem)


def plan_windows(shard, T: int, max_tokens: int | None = None, seed: int = DEFAULT_SEED, folds: int = 1) -> WindowPlan:
    """The WindowPlan of windows of length T over `shard`: all of them, or ⌈max_tokens / T⌉ chosen
    at random (seeded), dealt into `folds` folds."""
    n = int(shard.n_seq_windows(T))
    return WindowPlan(n, n_windows(shard, T, max_tokens) if max_tokens is not None else None, seed, folds)


def windows_by_id(shard, T: int, ids: np.ndarray):
    """Windows `ids` (global indices) of `shard` as `window_batch` returns them: (x int64 [n, T],
    y int64 [labels], mask bool [n, T]); window k holds tokens [kT, kT + T], padding 0 past the end."""
    ids = np.asarray(ids, dtype=np.int64)
    n_tok = int(shard.n_tokens)
    start = ids * T
    lengths = np.minimum(T + 1, n_tok - start)
    idx = start[:, None] + np.arange(T + 1, dtype=np.int64)[None, :]
    valid = np.arange(T + 1)[None, :] < lengths[:, None]
    win = np.where(valid, np.asarray(shard.tokens)[np.minimum(idx, n_tok - 1)], 0).astype(np.int64)
    win = torch.from_numpy(np.ascontiguousarray(win))
    mask = torch.arange(T)[None, :] < (torch.from_numpy(lengths.astype(np.int64))[:, None] - 1)
    return win[:, :-1], win[:, 1:][mask], mask


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
    seed: int = DEFAULT_SEED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(H float32 [N, d], Y int64 [N]) on the CPU: the LM head's input at every label position of
    the windows of `shard` and the next tokens there: all of the shard by default; with `max_tokens`,
    ⌈max_tokens / T⌉ windows drawn uniformly at random over the whole shard (`seed`; the same seed
    always gives the same windows, in shard order).

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
    seed = validate.seed("seed", seed)
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
    plan = plan_windows(shard, T, max_tokens, seed)
    with torch.inference_mode():
        for start in range(0, len(plan), batch_size):
            x, y, mask = windows_by_id(shard, T, plan.ids[start : start + batch_size])
            hs.append(model.features(x.to(dev))[mask.to(dev)].float().cpu())
            ys.append(y)
    return torch.cat(hs), torch.cat(ys)


__all__ = ["features", "load_model", "n_windows", "window_batch", "WindowPlan", "plan_windows", "windows_by_id",
           "window_hash", "DEFAULT_SEED"]
