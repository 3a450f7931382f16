"""The pieces every benchmark shares: problem sizes, device peaks, the result row, the per-family
context (timing into rows, the naive twin's memory check, agreement and speed-up), and the
provenance a results file carries (commit, machine, JSON writing)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .timing import time_call

F64 = torch.float64


def _preset(class_stats: tuple[int, int, int], pairwise: tuple[int, int], ncc: tuple[int, int, int]) -> dict:
    return {"class_stats": dict(zip("CdB", class_stats)), "pairwise": dict(zip("Cd", pairwise)),
            "ncc": dict(zip("BCd", ncc))}


#: problem sizes per preset and family: class_stats (C, d, B), pairwise (C, d), ncc (B, C, d)
SIZES: dict[str, dict[str, dict[str, int]]] = {
    # rehearsal only (e.g. with --triton-on-cpu under the interpreter): every code path, seconds
    "tiny": _preset(class_stats=(300, 40, 512), pairwise=(96, 40), ncc=(64, 200, 40)),
    # CPU-friendly: the whole preset (naive twins included) runs in well under a minute on 2 cores
    "small": _preset(class_stats=(8192, 256, 2048), pairwise=(2048, 128), ncc=(1024, 8192, 256)),
    # the paper's setting: GPT-2/GPT-Neo vocabulary, d = 1024 (GPT-Neo 350M-class width)
    "paper": _preset(class_stats=(50257, 1024, 65536), pairwise=(50257, 1024), ncc=(65536, 50257, 1024)),
    # a Llama-3-size vocabulary and width
    "large": _preset(class_stats=(128256, 4096, 65536), pairwise=(128256, 4096), ncc=(16384, 128256, 4096)),
}

# name fragment → peaks (bytes/s, flop/s). Dense (no sparsity) tensor-core numbers.
_PEAKS = [
    ("H200", dict(hbm=4.8e12, fp32=66.9e12, tf32=494.7e12, bf16=989.4e12, fp64=66.9e12, label="H200 (SXM)")),
    ("H100 PCIE", dict(hbm=2.0e12, fp32=51.2e12, tf32=378.0e12, bf16=756.0e12, fp64=51.2e12, label="H100 PCIe")),
    ("H100", dict(hbm=3.35e12, fp32=66.9e12, tf32=494.7e12, bf16=989.4e12, fp64=66.9e12, label="H100 SXM")),
]


def device_peaks(name: str | None) -> dict | None:
    """Peak HBM bandwidth and dense flop rates for a known device name, else None."""
    if not name:
        return None
    up = name.upper()
    for key, peaks in _PEAKS:
        if key in up:
            return dict(peaks)
    return None


@dataclass
class BenchRow:
    """One timed implementation of one case of a family (a row of `lcfast bench`'s table and JSON)."""

    family: str
    case: str
    impl: str
    size: dict
    kind: str = "fast"  # "fast" | "naive"
    time_s: float | None = None
    times_s: list = field(default_factory=list)
    speedup: float | None = None  # naive time / this time (same case)
    err: float | None = None  # relative error vs the reference (NCC: share of differing predictions)
    err_kind: str = ""
    reference: str = ""
    throughput: float | None = None
    unit: str = ""  # "GB/s" | "TFLOP/s"
    frac_peak: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)


def free_bytes(device: torch.device) -> int:
    """Free memory on the device (CUDA: mem_get_info; CPU: MemAvailable). The environment
    variable LCFAST_BENCH_FREE_BYTES overrides it (to rehearse the "does not fit" path)."""
    forced = os.environ.get("LCFAST_BENCH_FREE_BYTES")
    if forced:
        return int(float(forced))
    from lcfast.pipeline.collect.layers import available_bytes

    free = available_bytes(device)
    return (1 << 34) if free is None else free  # unknown: assume 16 GiB rather than refuse to run


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def release(device: torch.device) -> None:
    """Return cached CUDA blocks between implementations (each one starts from the same free memory)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def rel_err(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
    """max |a − b| / max |b| in float64 (0 when equal, inf when b is all zeros and a is not)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", F64)
        b = b.detach().to("cpu", F64)
        den = float(b.abs().max()) if b.numel() else 0.0
        num = float((a - b).abs().max()) if b.numel() else 0.0
    else:
        den, num = abs(float(b)), abs(float(a) - float(b))
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else float("inf")


def zipf_labels(B: int, C: int, s: float = 1.1, generator: torch.Generator | None = None) -> torch.Tensor:
    """B labels (int64) from a Zipf(s) law over C classes (class 0 the most frequent)."""
    p = 1.0 / torch.arange(1, C + 1, dtype=F64) ** s
    return torch.multinomial(p / p.sum(), B, replacement=True, generator=generator)


class Ctx:
    """What a family needs from the run: the device, the timing settings, the peaks, the rows so
    far, the progress bar and whether the Triton kernels take part."""

    def __init__(self, device, repeats, budget_s, peaks, rows, progress, task, use_triton):
        self.device = device
        self.repeats = repeats
        self.budget_s = budget_s
        self.peaks = peaks
        self.rows: list[BenchRow] = rows
        self.progress = progress
        self.task = task
        self.use_triton = use_triton

    def step(self, what: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, what=what)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def run(self, row: BenchRow, fn: Callable[[], Any]) -> Any:
        """Time fn into row and return its warm-up result (errors are recorded in the row, never raised)."""
        self.step(f"{row.family}: {row.impl}")
        try:
            res, row.time_s, row.times_s = time_call(fn, self.repeats, self.budget_s)
            return res
        except Exception as exc:  # noqa: BLE001 - a failing implementation is a result, not a crash
            row.note = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            row.extra["traceback"] = traceback.format_exc(limit=6)
            return None
        finally:
            self.rows.append(row)
            release(self.device)

    def naive_fits(self, need: int) -> tuple[bool, str]:
        """Whether `need` bytes (a naive twin's estimate) fit in 80% of the free memory, and a note saying so."""
        free = free_bytes(self.device)
        ok = need <= 0.8 * free
        return ok, f"naive needs ~{_gb(need)}, {_gb(free)} free"

    def run_naive(self, row: BenchRow, fits: bool, fit_note: str, fn: Callable[[], Any]) -> Any:
        """Time the naive twin into `row` when it fits (its result, None when it failed), else record why not."""
        if fits:
            return self.run(row, fn)
        row.note = f"not run: {fit_note}"
        self.rows.append(row)
        return None

    def time_matrix_impls(self, family: str, case: str, size: dict, flops: float, impls: list,
                          rows: dict[str, BenchRow], results: dict[str, Any]) -> None:
        """Time each (name, peak key, fn, launch info or None) of `impls` into a row of `rows`; their
        results into `results`, their throughput in TFLOP/s of `flops` (and the share of the
        device's peak for that precision on CUDA)."""
        for name, peak_key, fn, info in impls:
            row = BenchRow(family, case, name, size)
            rows[name] = row
            res = self.run(row, fn)
            if res is None:
                continue
            results[name] = res
            row.throughput = flops / row.time_s / 1e12
            row.unit = "TFLOP/s"
            if self.peaks and self.device.type == "cuda":
                row.frac_peak = row.throughput * 1e12 / self.peaks[peak_key]
                row.extra["peak"] = peak_key
            if info is not None:
                row.extra["launch"] = dict(info)

    def finish_case(self, rows: dict[str, BenchRow], results: dict[str, Any], fallback: str,
                    agreement: Callable[[BenchRow, Any, Any], None]) -> None:
        """Score the case's rows (`score`), drop its results, free the device's cache, advance the progress."""
        score(rows, results, fallback, agreement)
        results.clear()
        release(self.device)
        self.advance()


def score(rows: dict[str, BenchRow], results: dict[str, Any], fallback: str,
          agreement: Callable[[BenchRow, Any, Any], None]) -> None:
    """Agreement and speed-up of each result of a case. The reference is the naive twin's result
    (key "naive") when it ran, else `fallback`'s (the float64 torch twin); `agreement(row, res, ref)`
    sets the row's err/err_kind. Speed-ups are against the naive twin's time."""
    ref_key = "naive" if "naive" in results else fallback
    ref = results.get(ref_key)
    if ref is not None:
        rows[ref_key].extra["is_reference"] = True
    naive_t = rows["naive"].time_s
    for name, res in results.items():
        r = rows[name]
        if ref is not None and name != ref_key:
            agreement(r, res, ref)
            r.reference = ref_key
        if name != "naive" and naive_t and r.time_s:
            r.speedup = naive_t / r.time_s


# ------------------------------------------------------------------------------------------------
# provenance and output of the stand-alone benchmarks (bench/*.py)
# ------------------------------------------------------------------------------------------------


def git_commit(path: str | Path) -> str | None:
    """The commit checked out at `path` (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_info(**more: Any) -> dict:
    """CPU count, platform and processor of this machine (+ `more`), for a results file."""
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(), **more}


def write_json(path: str | Path | None, obj: Any, indent: int = 1) -> None:
    """Write `obj` as JSON to `path` (nothing when path is None), creating the folder, atomically."""
    if path is None:
        return
    from lcfast.io import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=indent, default=str) + "\n")
