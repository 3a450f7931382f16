"""Triton kernels of lcfast, one module per family (each: kernel + launcher + strategy docstring).

    class_stats.class_stats_triton(H, Y, n_classes, shift=None, centers=None) -> (counts, sums, sqsums)
    pairwise.pairwise_triton(M, var, cdnv_power=1.0, precision="ieee") -> PairwiseSums
    ncc.ncc_triton(H, means, kept_ids, W, b=None) -> (ncc_pred, lm_pred)

The torch twins live in lcfast.stats (classstats.class_stats_torch, pairwise.pairwise_torch,
ncc.ncc_torch). Kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 was set
before this package was imported. Submodules are imported lazily (importing triton costs ~1 s).
"""

from __future__ import annotations

from lcfast._lazy import lazy_getattr

__all__ = ["class_stats_triton", "pairwise_triton", "ncc_triton", "available"]

_LAZY = {
    "class_stats_triton": "lcfast.kernels.class_stats",
    "pairwise_triton": "lcfast.kernels.pairwise",
    "ncc_triton": "lcfast.kernels.ncc",
}


def available() -> tuple[bool, str]:
    """(True, mode) when the kernels can run here — mode "cuda", "interpreter" or both — else
    (False, reason)."""
    try:
        import torch
        import triton  # noqa: F401

        from lcfast.kernels import _common
    except Exception as exc:  # noqa: BLE001
        return False, f"triton unavailable: {type(exc).__name__}: {exc}"
    if _common.INTERPRET:
        return True, "interpreter"
    if torch.cuda.is_available():
        return True, "cuda"
    return False, "no CUDA device and TRITON_INTERPRET is not set"


__getattr__ = lazy_getattr(__name__, _LAZY)
