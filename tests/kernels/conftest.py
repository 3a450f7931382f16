"""Kernel tests: where they run.

LCFAST_TEST_DEVICE=cpu (default): the Triton kernels run on the CPU through the Triton interpreter,
which must be switched on before `triton` (and lcfast.kernels) are imported — tests/conftest.py
sets TRITON_INTERPRET=1 when it is imported, before any test module. LCFAST_TEST_DEVICE=cuda: the
kernels are compiled for the GPU (the interpreter is left off); bench/gpu_check.sh runs them that way.
"""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = os.environ.get("LCFAST_TEST_DEVICE", "cpu").strip().lower() or "cpu"


def _kernel_env_problem() -> str | None:
    if DEVICE not in ("cpu", "cuda"):
        return f"LCFAST_TEST_DEVICE must be cpu or cuda, got {DEVICE!r}"
    if DEVICE == "cuda" and not torch.cuda.is_available():
        return "LCFAST_TEST_DEVICE=cuda but torch sees no CUDA device"
    try:
        from lcfast.kernels import _common
    except Exception as exc:  # triton missing or broken
        return f"lcfast.kernels does not import: {exc}"
    if DEVICE == "cpu" and not _common.INTERPRET:
        return ("lcfast.kernels was imported before TRITON_INTERPRET=1 was set (another test module "
                "imported it first): run with TRITON_INTERPRET=1 in the environment")
    if DEVICE == "cuda" and _common.INTERPRET:
        return "LCFAST_TEST_DEVICE=cuda but TRITON_INTERPRET=1 is set"
    return None


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the kernel tests run on (fails loudly when the environment is inconsistent)."""
    problem = _kernel_env_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
    return torch.device(DEVICE)
