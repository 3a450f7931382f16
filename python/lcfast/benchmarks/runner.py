"""`run_bench`: the driver of `lcfast bench` — checks the arguments, runs the chosen families on
one device and returns the JSON-able report (format "lcfast.bench/1")."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict

import torch

from .harness import SIZES, BenchRow, Ctx, device_peaks
from .stats import FAMILIES
from .timing import Stopwatch

TIMING = ("one warm-up call, then torch.utils.benchmark blocked_autorange for at least repeats × the warm-up's "
          "time (and 0.2 s) within the budget; median seconds per call; CUDA: synchronized around each block")


def _versions() -> dict:
    import lcfast

    out = {"python": platform.python_version(), "lcfast": lcfast.__version__, "torch": torch.__version__}
    try:
        import triton

        out["triton"] = triton.__version__
    except Exception as exc:  # noqa: BLE001
        out["triton"] = f"missing ({type(exc).__name__})"
    out["cuda"] = torch.version.cuda
    return out


def _check_args(device: str, sizes: str, families: list[str] | None, repeats: int | None,
                triton_on_cpu: bool) -> tuple[torch.device, list[str], int | None, bool]:
    """The device, the families, the validated repeats and whether Triton takes part; a UsageError
    (exit 2) for anything the run cannot do."""
    from lcfast.errors import UsageError

    if sizes not in SIZES:
        raise UsageError(f"--sizes must be one of {', '.join(SIZES)}, got {sizes!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device (use --device cpu)")
    fams = families or list(FAMILIES)
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        raise UsageError(f"--only: unknown families {bad}; known: {', '.join(FAMILIES)}")
    use_triton = device == "cuda"
    if triton_on_cpu:
        from lcfast.kernels import _common

        if not _common.INTERPRET:
            raise UsageError("--triton-on-cpu needs TRITON_INTERPRET=1 in the environment")
        use_triton = True
    if repeats is not None:
        from lcfast import validate

        repeats = validate.integer("--repeats", repeats, min=1, max=validate.BENCH_REPEATS_MAX)
    return torch.device(device), fams, repeats, use_triton


def run_bench(
    device: str = "auto",
    sizes: str = "small",
    families: list[str] | None = None,
    repeats: int | None = None,
    budget_s: float | None = None,
    triton_on_cpu: bool = False,
    progress: bool = True,
) -> dict:
    """Run the benchmark and return the JSON-able report (see the package docstring).

    device: "auto" (cuda when available), "cpu" or "cuda". sizes: a key of :data:`SIZES`.
    repeats: at least this many warm-up durations are timed per implementation (default 3 on CPU,
    10 on CUDA), within budget_s seconds (default 4 on CPU, 10 on CUDA).
    triton_on_cpu: also time the Triton kernels on CPU (only under TRITON_INTERPRET=1; the
    interpreter is orders of magnitude slower — a correctness rehearsal, not a measurement).
    """
    dev, fams, repeats, use_triton = _check_args(device, sizes, families, repeats, triton_on_cpu)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    peaks = device_peaks(name) if dev.type == "cuda" else None
    if repeats is None:
        repeats = 10 if dev.type == "cuda" else 3
    if budget_s is None:
        budget_s = 10.0 if dev.type == "cuda" else 4.0
    rows: list[BenchRow] = []
    threads = torch.get_num_threads() if dev.type == "cpu" else None
    prog = task = None
    if progress:
        from lcfast.progress import progress_bar

        prog = progress_bar(unit="", fields=("what",), transient=True)
        prog.start()
        task = prog.add_task("bench", total=sum(2 if f == "class_stats" else 1 for f in fams), what="starting")
    try:
        with Stopwatch() as sw:
            ctx = Ctx(dev, repeats, budget_s, peaks, rows, prog, task, use_triton)
            for f in fams:
                FAMILIES[f](ctx, SIZES[sizes][f])
    finally:
        if prog is not None:
            prog.stop()
    return {
        "format": "lcfast.bench/1",
        "device_kind": dev.type,
        "device": name,
        "peaks": peaks,
        "versions": _versions(),
        "sizes_preset": sizes,
        "sizes": {f: SIZES[sizes][f] for f in fams},
        "torch_threads": threads,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "repeats": repeats,
        "budget_s_per_impl": budget_s,
        "timing": TIMING,
        "wall_s": sw.wall_s,
        "rows": [asdict(r) for r in rows],
    }
