"""Array arguments of the public statistics/metrics API: torch tensors, or numpy arrays (and nested
lists of numbers) converted here, so `ClassStats.update(H_np, Y_np)` works like the tensor call.

numpy arrays are shared with torch when they can be (`torch.from_numpy`); a read-only array (a
memory map, a broadcast view) is copied first, as torch cannot alias it safely. Unsigned labels
become int64 (torch has no general uint32/uint64 support on every version this package runs on).
"""

from __future__ import annotations

import numpy as np
import torch

from lcfast.errors import UsageError


def as_tensor(x, what: str):
    """`x` as a torch.Tensor (None passes through; a tensor is detached: statistics are never part of
    an autograd graph, e.g. a model's `lm_head_weight`). `what` names the argument in the UsageError
    raised for anything that is not a tensor or a numeric numpy array / list."""
    if x is None:
        return x
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError):
            raise UsageError(f"{what}: cannot convert {type(x).__name__} to an array") from None
    if not isinstance(x, np.ndarray):
        raise UsageError(f"{what}: expected a torch.Tensor or a numpy array, got {type(x).__name__}")
    kind = x.dtype.kind
    if kind == "u":
        if x.size and int(x.max()) > np.iinfo(np.int64).max:
            raise UsageError(f"{what}: unsigned values beyond int64")
        x = x.astype(np.int64)
    elif kind == "f" and x.dtype.itemsize > 8:
        raise UsageError(f"{what}: numpy {x.dtype} has no torch equivalent; convert it to float64")
    elif kind not in "biuf":
        raise UsageError(f"{what}: numpy dtype {x.dtype} is not numeric (expected float or integer)")
    if not x.flags.writeable or not x.flags.c_contiguous:
        x = np.array(x, order="C", copy=True)
    return torch.from_numpy(x)


__all__ = ["as_tensor"]
