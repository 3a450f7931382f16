"""Helpers shared by the Triton launchers: interpreter detection, device checks, tiny utilities.

The Triton interpreter (``TRITON_INTERPRET=1``) is chosen when a kernel is *decorated*, i.e. when
the kernel module is imported, so the flag is read once here at import time. A CPU tensor can only
be handed to a kernel under the interpreter; a CUDA tensor only when the interpreter is off (the
interpreter copies CUDA tensors to the host, which works but measures nothing useful).
"""

from __future__ import annotations

import os

import torch

from lcfast.errors import UsageError

#: True when Triton kernels run on the CPU through the interpreter (read at import time).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_device(*tensors: torch.Tensor, what: str) -> torch.device:
    """All tensors on one device, and that device usable by Triton in this process."""
    devs = {t.device for t in tensors if t is not None}
    if len(devs) != 1:
        raise UsageError(f"{what}: all inputs must be on one device, got {sorted(map(str, devs))}")
    dev = devs.pop()
    if dev.type == "cpu" and not INTERPRET:
        raise UsageError(
            f"{what}: backend 'triton' on CPU tensors needs TRITON_INTERPRET=1 set before lcfast and "
            "triton are imported (or use backend='torch')"
        )
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"{what}: unsupported device {dev} for the Triton backend")
    return dev


def next_pow2(n: int) -> int:
    """Smallest power of two ≥ n (≥ 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def as_float_input(x: torch.Tensor, name: str, what: str) -> torch.Tensor:
    """A 2-D floating tensor with unit stride along its last dim (copies only when needed)."""
    if x.dim() != 2:
        raise UsageError(f"{what}: {name} must be 2-D, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UsageError(f"{what}: {name} must be floating point, got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        x = x.float()
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x
