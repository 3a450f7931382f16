"""`lcfast bench`: every fast path timed against its naive PyTorch twin, side by side, in one run.

Families (the fast paths of docs/ARCHITECTURE.md, "Measurement API"):

* class statistics update — per-class counts, Σ(h − r_c), Σ‖h − r_c‖² with the per-class
  reference shift r_c that ``ClassStats`` uses, accumulated in place (``out=``). Fast paths:
  ``class_stats_torch`` (index_put scatter), on CPU the fused Rust loop that ``ClassStats.update``
  runs there (``lcfast._core.class_stats_accumulate``), and, on CUDA, ``class_stats_triton`` with both strategies
  ("segmented" and the per-row "atomic" baseline); naive twin: one-hot matmul (``class_stats_naive``).
  Run on uniform *and* Zipf labels (skew is what breaks atomics); the atomic profile of the labels
  (atomics per column, worst per-address contention) is recorded for both strategies.
* pairwise sweep — the PairwiseSums of centred means. Fast: ``pairwise_torch`` (blocked, float64)
  and, on CUDA, ``pairwise_triton`` in every precision mode; naive: ``pairwise_naive(exact=False)``
  (float64 C×C grids).
* NCC agreement — nearest kept mean and LM argmax per position. Fast: ``ncc_torch`` (blocked,
  float64) and, on CUDA, ``ncc_triton`` per precision; naive: the dense B×K distance and B×C logit
  matrices (float64 on CPU, float32 on CUDA: the obvious implementation a user would write).

Timing: one warm-up call (compiles Triton kernels), then up to ``repeats`` timed calls within a
per-implementation time budget; the median is reported. CUDA calls are timed with CUDA events
around each call after a synchronize. Agreement: every row is compared with a reference result
— the naive twin's when it ran, else the float64 torch twin's — and the relative error (or the
share of identical predictions, for NCC) is printed. Before a naive twin runs, its memory is
estimated and compared with the free memory of the device; when it does not fit, the table says so
and the family is re-run at the largest size that fits (marked "reduced"), so a speed-up is still
measured. Throughput: class statistics in GB/s against the minimum traffic of an in-place update
(H read once, labels, read + write of the touched accumulator rows and their shift rows); pairwise
and NCC in TFLOP/s of the useful matrix work (pairs c < c′: C(C−1)·d flops; NCC: 2·B·d·(K + C)),
each as a fraction of the device's peak when the device is known (H100 SXM / PCIe, H200).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

__all__ = ["SIZES", "device_peaks", "run_bench", "render_table", "print_bench_table", "table_rows", "BenchRow",
           "train_throughput", "overhead_summary"]

F64 = torch.float64

#: problem sizes per preset and family
SIZES: dict[str, dict[str, dict[str, int]]] = {
    # rehearsal only (e.g. with --triton-on-cpu under the interpreter): every code path, seconds
    "tiny": {
        "class_stats": {"C": 300, "d": 40, "B": 512},
        "pairwise": {"C": 96, "d": 40},
        "ncc": {"B": 64, "C": 200, "d": 40},
    },
    # CPU-friendly: the whole preset (naive twins included) runs in well under a minute on 2 cores
    "small": {
        "class_stats": {"C": 8192, "d": 256, "B": 2048},
        "pairwise": {"C": 2048, "d": 128},
        "ncc": {"B": 1024, "C": 8192, "d": 256},
    },
    # the paper's setting: GPT-2/GPT-Neo vocabulary, d = 1024 (GPT-Neo 350M-class width)
    "paper": {
        "class_stats": {"C": 50257, "d": 1024, "B": 65536},
        "pairwise": {"C": 50257, "d": 1024},
        "ncc": {"B": 65536, "C": 50257, "d": 1024},
    },
    # a Llama-3-size vocabulary and width
    "large": {
        "class_stats": {"C": 128256, "d": 4096, "B": 65536},
        "pairwise": {"C": 128256, "d": 4096},
        "ncc": {"B": 16384, "C": 128256, "d": 4096},
    },
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


# ------------------------------------------------------------------------------------------------
# infrastructure
# ------------------------------------------------------------------------------------------------


class _Timer:
    def __init__(self, device: torch.device, repeats: int, budget_s: float) -> None:
        self.device = device
        self.repeats = repeats
        self.budget_s = budget_s

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], Any]) -> tuple[Any, float, list[float]]:
        """(result of the warm-up call, median seconds, all timed seconds)."""
        self.sync()
        t0 = time.perf_counter()
        result = fn()
        self.sync()
        first = time.perf_counter() - t0
        times: list[float] = []
        deadline = time.perf_counter() + max(self.budget_s - first, 0.0)
        for i in range(self.repeats):
            if self.device.type == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            if time.perf_counter() > deadline:
                break
        if not times:
            times = [first]
        return result, statistics.median(times), times


def free_bytes(device: torch.device) -> int:
    """Free memory on the device (CUDA: mem_get_info; CPU: MemAvailable). The environment
    variable LCFAST_BENCH_FREE_BYTES overrides it (to rehearse the "does not fit" path)."""
    forced = os.environ.get("LCFAST_BENCH_FREE_BYTES")
    if forced:
        return int(float(forced))
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _rel(a: torch.Tensor | float, b: torch.Tensor | float) -> float:
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
    """B labels from a Zipf(s) law over C classes (class 0 the most frequent)."""
    p = 1.0 / torch.arange(1, C + 1, dtype=F64) ** s
    return torch.multinomial(p / p.sum(), B, replacement=True, generator=generator)


# ------------------------------------------------------------------------------------------------
# families
# ------------------------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, device, timer, peaks, rows, progress, task, use_triton):
        self.device = device
        self.timer = timer
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
        """Time fn into row (errors are recorded in the row, never raised)."""
        self.step(f"{row.family}: {row.impl}")
        try:
            res, med, times = self.timer(fn)
            row.time_s, row.times_s = med, times
            return res
        except Exception as exc:  # noqa: BLE001 - a failing implementation is a result, not a crash
            row.note = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            row.extra["traceback"] = traceback.format_exc(limit=6)
            return None
        finally:
            self.rows.append(row)
            _release(self.device)

    def naive_fits(self, need: int) -> tuple[bool, str]:
        free = free_bytes(self.device)
        ok = need <= 0.8 * free
        return ok, f"naive needs ~{_gb(need)}, {_gb(free)} free"


def _class_stats_family(ctx: _Ctx, size: dict, case_suffix: str = "") -> None:
    from lcfast.stats.classstats import _fused_core, class_stats_torch
    from lcfast.stats.naive import class_stats_naive

    dev = ctx.device
    C, d, B = size["C"], size["d"], size["B"]
    hdtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    H = (torch.randn(B, d, generator=g) + 0.5).to(hdtype).to(dev)
    ref_shift = torch.randn(C, d, generator=g, dtype=F64).to(dev) * 0.1
    naive_need = 16 * B * C + 4 * 8 * B * d + 8 * C * d * 2 + 8 * B * C  # one-hot (i64 + f64) + oh@shift
    fits, fit_note = ctx.naive_fits(naive_need)
    peaks = ctx.peaks
    for dist in ("uniform", "zipf"):
        case = f"{dist} labels{case_suffix}"
        if dist == "uniform":
            Y = torch.randint(0, C, (B,), generator=g)
        else:
            Y = zipf_labels(B, C, 1.1, g)
        touched = int(torch.unique(Y).numel())
        Yd = Y.to(dev)
        # minimum traffic of an in-place update: H once, labels, and per touched class the shift
        # row read plus the sums row read and written (+ the scalars)
        min_bytes = B * d * H.element_size() + B * 8 + touched * (3 * d * 8 + 6 * 8)
        from lcfast.kernels.class_stats import atomic_profile

        prof = atomic_profile(Y, C)

        def bufs():
            return (torch.zeros(C, dtype=F64, device=dev), torch.zeros(C, d, dtype=F64, device=dev),
                    torch.zeros(C, dtype=F64, device=dev))

        results: dict[str, Any] = {}
        naive_row = BenchRow("class_stats", case, "naive: one-hot matmul (f64)", size, kind="naive")
        if fits:
            results["naive"] = ctx.run(naive_row, lambda: class_stats_naive(H, Yd, C, shift=ref_shift))
        else:
            naive_row.note = f"not run: {fit_note}"
            ctx.rows.append(naive_row)

        impls: list[tuple[str, Callable[[Any], Any]]] = []
        ws: dict = {}
        impls.append(("torch: index_put scatter", lambda o: class_stats_torch(H, Yd, C, shift=ref_shift, out=o, workspace=ws)))
        core = _fused_core()
        if dev.type == "cpu" and core is not None and H.dtype in (torch.float32, F64):
            # the fused one-pass loop that ClassStats.update runs on CPU (same sums, per-class shift)
            def fused(o, core=core, Yn=Yd.numpy()):
                core.class_stats_accumulate(H.numpy(), Yn, ref_shift.numpy(), o[1].numpy(), o[2].numpy(), o[0].numpy(),
                                            None, torch.get_num_threads())
                return o

            impls.append(("rust: fused (ClassStats CPU path)", fused))
        if ctx.use_triton:
            from lcfast.kernels.class_stats import class_stats_triton

            for strat in ("segmented", "atomic"):
                impls.append((f"triton: {strat}", lambda o, s=strat: class_stats_triton(H, Yd, C, shift=ref_shift, out=o, strategy=s)))
        for name, fn in impls:
            row = BenchRow("class_stats", case, name, size)
            o = bufs()
            # timed: in-place accumulation into the same buffers (a streaming update; no zeroing
            # inside the timing); the agreement check uses one more call into fresh buffers
            ok = ctx.run(row, lambda fn=fn, o=o: fn(o)) is not None
            del o
            if ok:
                try:
                    results[name] = tuple(t.clone() for t in fn(bufs()))
                except Exception as exc:  # noqa: BLE001
                    row.note = f"FAILED (agreement call): {type(exc).__name__}: {exc}"[:300]
                row.throughput = min_bytes / row.time_s / 1e9
                row.unit = "GB/s"
                if peaks and dev.type == "cuda":
                    row.frac_peak = row.throughput * 1e9 / peaks["hbm"]
                if name.startswith("triton"):
                    strat = name.split(": ")[1]
                    row.extra["atomic_profile"] = prof[strat]
            _release(dev)
        row_by = {r.impl: r for r in ctx.rows if r.family == "class_stats" and r.case == case}
        ref_key = "naive" if "naive" in results else "torch: index_put scatter"
        ref = results.get(ref_key)
        for name, res in results.items():
            r = row_by["naive: one-hot matmul (f64)"] if name == "naive" else row_by[name]
            if ref is not None and name != ref_key:
                r.err = max(_rel(res[1], ref[1]), _rel(res[2], ref[2]), _rel(res[0], ref[0]))
                r.err_kind = "rel"
                r.reference = ref_key
            if name != "naive" and "naive" in results and row_by["naive: one-hot matmul (f64)"].time_s and r.time_s:
                r.speedup = row_by["naive: one-hot matmul (f64)"].time_s / r.time_s
        ref_row = row_by["naive: one-hot matmul (f64)"] if ref_key == "naive" else row_by.get(ref_key)
        if ref_row is not None and ref is not None:
            ref_row.extra["is_reference"] = True
        for r in row_by.values():
            r.extra.setdefault("touched_classes", touched)
            r.extra.setdefault("atomic_profile_all", prof)
        del results
        _release(dev)
        ctx.advance()
    if not fits and not case_suffix:
        # largest batch for which the one-hot twin fits: measure the speed-up there
        free = 0.8 * free_bytes(dev)
        per_row = 24 * C + 4 * 8 * d
        B2 = int(max(256, min(B // 2, (free - 16 * C * d) // per_row)))
        B2 = 1 << int(math.log2(B2))
        _class_stats_family(ctx, {"C": C, "d": d, "B": B2}, case_suffix=f", reduced B={B2}")


def _pair_values_summary(ps) -> dict:
    return {
        "cdnv_mean": ps.cdnv.mean, "cos_mean": ps.cos.mean, "cos_var": ps.cos.var,
        "logk_mean": ps.logk.mean, "logk_var": ps.logk.var, "degenerate": ps.degenerate,
    }


def _pairwise_err(ps, ref) -> float:
    a, b = _pair_values_summary(ps), _pair_values_summary(ref)
    if a["degenerate"] != b["degenerate"]:
        return float("inf")
    errs = []
    for k in ("cdnv_mean", "cos_var", "logk_mean", "logk_var"):
        errs.append(_rel(a[k], b[k]))
    # cos mean of centred means is ~ −1/(C−1): judge it on the scale of its spread
    errs.append(abs(a["cos_mean"] - b["cos_mean"]) / max(math.sqrt(max(b["cos_var"], 0.0)), 1e-300))
    return max(errs)


def _pairwise_family(ctx: _Ctx, size: dict, case_suffix: str = "") -> None:
    from lcfast.stats.naive import pairwise_naive
    from lcfast.stats.pairwise import pairwise_torch

    dev = ctx.device
    C, d = size["C"], size["d"]
    g = torch.Generator().manual_seed(1)
    M = torch.randn(C, d, generator=g, dtype=F64)
    M = (M - M.mean(0)).to(dev)
    var = (torch.rand(C, generator=g, dtype=F64) + 0.5).to(dev)
    case = f"C={C} d={d}{case_suffix}"
    flops = float(C) * (C - 1) * d
    naive_need = 14 * 8 * C * C + 8 * C * d * 4
    fits, fit_note = ctx.naive_fits(naive_need)
    results: dict[str, Any] = {}
    rows: dict[str, BenchRow] = {}
    nrow = BenchRow("pairwise", case, "naive: C×C grids (f64)", size, kind="naive")
    rows["naive"] = nrow
    if fits:
        results["naive"] = ctx.run(nrow, lambda: pairwise_naive(M, var, exact=False))
    else:
        nrow.note = f"not run: {fit_note}"
        ctx.rows.append(nrow)
    impls: list[tuple[str, str, Callable[[], Any], dict | None]] = [
        ("torch: blocked (f64)", "fp64", lambda: pairwise_torch(M, var), None)
    ]
    if ctx.use_triton:
        from lcfast.kernels.pairwise import pairwise_triton

        for prec in ("ieee", "tf32x3", "tf32", "bf16"):
            peak_key = {"ieee": "fp32", "tf32x3": "tf32", "tf32": "tf32", "bf16": "bf16"}[prec]
            info: dict = {}
            impls.append((f"triton: {prec}", peak_key,
                          lambda p=prec, i=info: pairwise_triton(M, var, precision=p, info=i), info))
    for name, peak_key, fn, info in impls:
        row = BenchRow("pairwise", case, name, size)
        rows[name] = row
        res = ctx.run(row, fn)
        if res is not None:
            results[name] = res
            row.throughput = flops / row.time_s / 1e12
            row.unit = "TFLOP/s"
            if ctx.peaks and dev.type == "cuda":
                row.frac_peak = row.throughput * 1e12 / ctx.peaks[peak_key]
                row.extra["peak"] = peak_key
            if info is not None:
                row.extra["launch"] = dict(info)
    ref_key = "naive" if "naive" in results else "torch: blocked (f64)"
    ref = results.get(ref_key)
    if ref is not None:
        rows[ref_key].extra["is_reference"] = True
    for name, res in results.items():
        r = rows[name]
        r.extra["values"] = _pair_values_summary(res)
        if ref is not None and name != ref_key:
            r.err = _pairwise_err(res, ref)
            r.err_kind = "rel"
            r.reference = ref_key
        if name != "naive" and rows["naive"].time_s and r.time_s:
            r.speedup = rows["naive"].time_s / r.time_s
    del results
    _release(dev)
    ctx.advance()
    if not fits and not case_suffix:
        free = 0.8 * free_bytes(dev)
        C2 = int(math.sqrt(max(free - 32 * C * d, 1) / (14 * 8)))
        C2 = max(256, min(C // 2, C2))
        C2 = (C2 // 256) * 256
        _pairwise_family(ctx, {"C": C2, "d": d}, case_suffix=", reduced")


def _ncc_dense(H, mu, kept, W, b, dtype):
    """The naive NCC: full B×K squared distances and B×C logits, then argmin / argmax."""
    h = H.to(dtype)
    m = mu.to(dtype)
    dist = (h * h).sum(1, keepdim=True) - 2.0 * h @ m.T + (m * m).sum(1)[None, :]
    logits = h @ W.to(dtype).T
    if b is not None:
        logits = logits + b.to(dtype)
    return kept[dist.argmin(1)], logits.argmax(1)


def _ncc_family(ctx: _Ctx, size: dict, case_suffix: str = "") -> None:
    from lcfast.stats.ncc import ncc_torch

    dev = ctx.device
    B, C, d = size["B"], size["C"], size["d"]
    g = torch.Generator().manual_seed(2)
    hdtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    means = torch.randn(C, d, generator=g)
    W = (torch.randn(C, d, generator=g) / math.sqrt(d)).to(dev)
    bias = (torch.randn(C, generator=g) * 0.1).to(dev)
    y = torch.randint(0, C, (B,), generator=g)
    H = (means[y] + torch.randn(B, d, generator=g)).to(hdtype).to(dev)
    means = means.to(dev)
    kept = torch.arange(C, device=dev)
    K = C
    flops = 2.0 * B * d * (K + C)
    ndtype = F64 if dev.type == "cpu" else torch.float32
    esz = 8 if ndtype == F64 else 4
    naive_need = esz * (3 * B * K + 2 * B * C + (K + C) * d + B * d)
    fits, fit_note = ctx.naive_fits(naive_need)
    case = f"B={B} C={C} d={d}{case_suffix}"
    results: dict[str, Any] = {}
    rows: dict[str, BenchRow] = {}
    naive_name = f"naive: dense B×C ({'f64' if ndtype == F64 else 'fp32'})"
    nrow = BenchRow("ncc", case, naive_name, size, kind="naive")
    rows["naive"] = nrow
    if fits:
        results["naive"] = ctx.run(nrow, lambda: _ncc_dense(H, means, kept, W, bias, ndtype))
    else:
        nrow.note = f"not run: {fit_note}"
        ctx.rows.append(nrow)
    impls: list[tuple[str, str, Callable[[], Any]]] = [
        ("torch: blocked (f64)", "fp64", lambda: ncc_torch(H, means, kept, W, bias))
    ]
    if ctx.use_triton:
        from lcfast.kernels.ncc import ncc_triton

        for prec in ("ieee", "tf32", "bf16"):
            peak_key = {"ieee": "fp32", "tf32": "tf32", "bf16": "bf16"}[prec]
            impls.append((f"triton: {prec}", peak_key, lambda p=prec: ncc_triton(H, means, kept, W, bias, precision=p)))
    for name, peak_key, fn in impls:
        row = BenchRow("ncc", case, name, size)
        rows[name] = row
        res = ctx.run(row, fn)
        if res is not None:
            results[name] = res
            row.throughput = flops / row.time_s / 1e12
            row.unit = "TFLOP/s"
            if ctx.peaks and dev.type == "cuda":
                row.frac_peak = row.throughput * 1e12 / ctx.peaks[peak_key]
                row.extra["peak"] = peak_key
    ref_key = "naive" if "naive" in results else "torch: blocked (f64)"
    ref = results.get(ref_key)
    if ref is not None:
        rows[ref_key].extra["is_reference"] = True
    for name, res in results.items():
        r = rows[name]
        if ref is not None and name != ref_key:
            same = (res[0] == ref[0]) & (res[1] == ref[1])
            r.err = 1.0 - float(same.to(F64).mean())
            r.err_kind = "mismatch"
            r.reference = ref_key
            r.extra["ncc_mismatch"] = 1.0 - float((res[0] == ref[0]).to(F64).mean())
            r.extra["lm_mismatch"] = 1.0 - float((res[1] == ref[1]).to(F64).mean())
        if name != "naive" and rows["naive"].time_s and r.time_s:
            r.speedup = rows["naive"].time_s / r.time_s
    del results
    _release(dev)
    ctx.advance()
    if not fits and not case_suffix:
        free = 0.8 * free_bytes(dev)
        B2 = int((free - esz * (K + C) * d) // (esz * (3 * K + 2 * C + d)))
        B2 = max(64, min(B // 2, B2))
        B2 = 1 << int(math.log2(B2))
        _ncc_family(ctx, {"B": B2, "C": C, "d": d}, case_suffix=", reduced")


FAMILIES = {"class_stats": _class_stats_family, "pairwise": _pairwise_family, "ncc": _ncc_family}


# ------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------


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


def run_bench(
    device: str = "auto",
    sizes: str = "small",
    families: list[str] | None = None,
    repeats: int | None = None,
    budget_s: float | None = None,
    triton_on_cpu: bool = False,
    progress: bool = True,
) -> dict:
    """Run the benchmark and return the JSON-able report (see the module docstring).

    device: "auto" (cuda when available), "cpu" or "cuda". sizes: a key of :data:`SIZES`.
    triton_on_cpu: also time the Triton kernels on CPU (only under TRITON_INTERPRET=1; the
    interpreter is orders of magnitude slower — a correctness rehearsal, not a measurement).
    """
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
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    peaks = device_peaks(name) if dev.type == "cuda" else None
    use_triton = dev.type == "cuda"
    if triton_on_cpu:
        from lcfast.kernels import _common

        if not _common.INTERPRET:
            raise UsageError("--triton-on-cpu needs TRITON_INTERPRET=1 in the environment")
        use_triton = True
    if repeats is not None:
        from lcfast import validate

        repeats = validate.integer("--repeats", repeats, min=1, max=validate.BENCH_REPEATS_MAX)
    if repeats is None:
        repeats = 10 if dev.type == "cuda" else 3
    if budget_s is None:
        budget_s = 10.0 if dev.type == "cuda" else 4.0
    timer = _Timer(dev, repeats, budget_s)
    rows: list[BenchRow] = []
    t_start = time.perf_counter()
    if device == "cpu":
        threads = torch.get_num_threads()
    else:
        threads = None

    prog = None
    task = None
    if progress:
        from lcfast.progress import progress_bar

        prog = progress_bar(unit="", fields=("what",), transient=True)
        prog.start()
        n_steps = sum(2 if f == "class_stats" else 1 for f in fams)
        task = prog.add_task("bench", total=n_steps, what="starting")
    try:
        ctx = _Ctx(dev, timer, peaks, rows, prog, task, use_triton)
        for f in fams:
            FAMILIES[f](ctx, SIZES[sizes][f])
    finally:
        if prog is not None:
            prog.stop()
    report = {
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
        "timing": "median of timed calls after one warm-up call; CUDA: events around each call",
        "wall_s": time.perf_counter() - t_start,
        "rows": [asdict(r) for r in rows],
    }
    return report


def _fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.0f} µs"


_BENCH_HEADERS = ["family", "case", "implementation", "time (median)", "speed-up vs naive", "agreement", "throughput",
                  "% of peak", "note"]


def table_rows(report: dict) -> list[list[str]]:
    """One row of cells (`_BENCH_HEADERS`) per timed implementation of the report."""
    out = []
    for r in report["rows"]:
        if r["err"] is None:
            agree = "reference" if r["extra"].get("is_reference") else "—"
        elif r["err_kind"] == "mismatch":
            agree = f"{100 * (1 - r['err']):.3f}% same"
        else:
            agree = f"rel {r['err']:.1e}"
        thr = f"{r['throughput']:.1f} {r['unit']}" if r["throughput"] is not None else "—"
        frac = f"{100 * r['frac_peak']:.0f}% {r['extra'].get('peak', 'HBM') if r['unit'] == 'TFLOP/s' else 'HBM'}" if r["frac_peak"] is not None else "—"
        note = r["note"]
        prof = r["extra"].get("atomic_profile")
        if prof:
            note = (note + " " if note else "") + f"atomics/col {prof['atomics']}, max/addr {prof['max_per_address']}"
        launch = r["extra"].get("launch")
        if launch and launch.get("refined_tiles"):
            note = (note + " " if note else "") + f"{launch['refined_tiles']} tiles re-evaluated exactly"
        out.append([r["family"], r["case"], r["impl"], _fmt_time(r["time_s"]),
                    f"{r['speedup']:.1f}×" if r["speedup"] else "—", agree, thr, frac, note])
    return out


def _title(report: dict) -> str:
    return f"lcfast bench — {report['device']} ({report['device_kind']}, sizes={report['sizes_preset']})"


def render_table(report: dict):
    """A rich Table of the report's rows (all columns; see `print_bench_table` for a terminal)."""
    from rich.table import Table

    t = Table(title=_title(report))
    for h in _BENCH_HEADERS:
        t.add_column(h, justify="right" if h in _BENCH_HEADERS[3:8] else "left")
    for row in table_rows(report):
        t.add_row(*row)
    return t


def print_bench_table(report: dict, console) -> None:
    """The report on `console`, never cut: one small table per (family, case) whose rows are the
    implementations by short name (naive, torch, rust, triton…), their descriptions listed below;
    columns without a value anywhere (% of peak on CPU, an empty note) are left out."""
    from lcfast.tables import print_table

    console.print(f"[bold]{_title(report)}[/] (speed-up: against the naive twin; median of the timed calls)",
                  highlight=False)
    heads = ["impl", "median", "speed-up", "agreement", "throughput", "% of peak", "note"]
    groups: dict = {}
    for row in table_rows(report):
        groups.setdefault((row[0], row[1]), []).append(row)
    described: dict[str, dict[str, str]] = {}
    for (family, case), rows in groups.items():
        cells = []
        prefixes = [r[2].partition(": ")[0] for r in rows]
        for r, short in zip(rows, prefixes):
            if prefixes.count(short) > 1:  # several variants (triton: segmented / atomic): their full names
                short = r[2]
            else:
                described.setdefault(family, {})[short] = r[2].partition(": ")[2]
            cells.append([short] + r[3:])
        keep = [i for i, h in enumerate(heads) if i == 0 or any(c[i] not in ("", "—") for c in cells)]
        print_table(console, f"{family}: {case}", [heads[i] for i in keep], [[c[i] for i in keep] for c in cells],
                    keys=1, fold=["note"], justify={h: "right" for h in heads[1:6]})
    for family, d in described.items():
        console.print(f"{family}: " + "; ".join(f"{k} = {v}" for k, v in d.items() if v), highlight=False)


# ------------------------------------------------------------------------------------------------
# class statistics against the machine's memory bandwidth (bench/bench_classstats_bandwidth.py)
# ------------------------------------------------------------------------------------------------


def time_median(fn: Callable[[], Any], min_run_time: float = 0.3, num_threads: int | None = None) -> float:
    """Median seconds per call of `fn` (torch.utils.benchmark, blocked autorange; CPU timing)."""
    from torch.utils import benchmark

    n = torch.get_num_threads() if num_threads is None else int(num_threads)
    t = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=n)
    return float(t.blocked_autorange(min_run_time=min_run_time).median)


def classstats_min_bytes(B: int, d: int, touched: int, h_bytes: int = 4, with_ref: bool = True) -> int:
    """Minimum memory traffic of one in-place ClassStats.update: H read once, the labels, and per
    class present in the batch a read-modify-write of its float64 Σ(h − r) row and of n, Σ‖·‖²
    (+ a read of its reference row r_c when `with_ref`; the same definition as `lcfast bench`)."""
    per_class = (3 if with_ref else 2) * d * 8 + 6 * 8
    return B * d * h_bytes + B * 8 + touched * per_class


def classstats_bandwidth(
    C: int = 8192,
    d: int = 256,
    B: int = 16384,
    labels: str = "uniform",
    mode: str = "one-pass",
    threads: int = 1,
    rounds: int = 5,
    min_run_time: float = 0.3,
    h_dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict:
    """Time `ClassStats.update` (torch backend, CPU) and a plain tensor copy of comparable traffic,
    interleaved `rounds` times in this process, and return their bandwidths and ratio.

    mode: "one-pass" (the streaming accumulator, references already set: the steady state),
    "two-pass" (`ClassStats.second_pass`: references fixed to the means) or "covariance"
    (one-pass + the d×d within-class scatter, which adds 2·B·d² flops: compute-, not memory-bound).
    The copy moves a float32 tensor of half the update's minimum traffic into another (read + write
    = the same byte count). Each round times both back to back (medians of blocked autoranges), so
    a load change on a shared machine hits both; the ratio is taken per round, then the median.
    """
    from lcfast.stats.classstats import ClassStats

    if mode not in ("one-pass", "two-pass", "covariance"):
        raise ValueError(f"mode must be one-pass, two-pass or covariance, got {mode!r}")
    g = torch.Generator().manual_seed(seed)
    if labels == "uniform":
        Y = torch.randint(0, C, (B,), generator=g)
    elif labels == "zipf":
        Y = zipf_labels(B, C, 1.1, g)
    else:
        raise ValueError(f"labels must be uniform or zipf, got {labels!r}")
    mu = torch.randn(C, d, generator=g) * 3
    H = (mu[Y] + torch.randn(B, d, generator=g)).to(h_dtype)
    touched = int(torch.unique(Y).numel())
    min_bytes = classstats_min_bytes(B, d, touched, H.element_size())
    st = ClassStats(C, d, covariance=mode == "covariance")
    st.update(H, Y, backend="torch")  # references set, workspace allocated: the steady state
    if mode == "two-pass":
        st = ClassStats.second_pass(st.means)
        st.update(H, Y, backend="torch")
    src = torch.randn(max(min_bytes // 4 // 2, 1), generator=g)
    dst = torch.empty_like(src)
    copy_bytes = 2 * src.numel() * src.element_size()

    def update():
        st.update(H, Y, backend="torch")

    def copy():
        dst.copy_(src)

    per_round = []
    load_start = os.getloadavg()
    for _ in range(rounds):
        tu = time_median(update, min_run_time, threads)
        tc = time_median(copy, min_run_time, threads)
        per_round.append({"update_s": tu, "copy_s": tc, "update_gbs": min_bytes / tu / 1e9,
                          "copy_gbs": copy_bytes / tc / 1e9, "ratio": (min_bytes / tu) / (copy_bytes / tc)})
    med = lambda k: statistics.median(r[k] for r in per_round)
    out = {
        "C": C, "d": d, "B": B, "labels": labels, "mode": mode, "threads": threads, "h_dtype": str(h_dtype).replace("torch.", ""),
        "touched_classes": touched,
        "min_bytes": min_bytes,
        "min_bytes_without_ref_rows": classstats_min_bytes(B, d, touched, H.element_size(), with_ref=False),
        "copy_bytes": copy_bytes,
        "update_s": med("update_s"), "copy_s": med("copy_s"),
        "update_gbs": med("update_gbs"), "copy_gbs": med("copy_gbs"), "ratio": med("ratio"),
        "rounds": per_round,
        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
    }
    if mode == "covariance":
        out["cov_gflops"] = 2 * B * d * d / out["update_s"] / 1e9
    return out


# ------------------------------------------------------------------------------------------------
# training throughput with and without --track-nc (bench/bench_track_overhead.py)
# ------------------------------------------------------------------------------------------------


def train_throughput(data_dir, out_dir, *, layers: int, width: int, context: int = 64, batch_size: int = 32,
                     lr: float = 3e-3, steps: int = 60, track_every: int | None = None, threads: int = 1,
                     seed: int = 0, eval_tokens: int = 1 << 20) -> dict:
    """One epoch of `steps` optimizer steps of `lcfast train` into the fresh folder `out_dir`, with
    `--track-nc --track-every track_every` when given, timed in this process:

    loop_tokens_per_s   the training loop's tokens/s (train_run's `tokens_per_s`: forward, backward,
                        optimizer, and with tracking the statistics and the mid-epoch rows)
    wall_s, cpu_s       the whole train_run (model build, the loop, evaluation — with tracking its NC4
                        decisions and the epoch's row — and the checkpoint), wall and process CPU time
    track_loop_s        (tracking) wall seconds the tracker took inside the training loop (statistics
                        updates, mid-epoch rows), timed in the run (the epoch record's track_loop_s)
    track_end_s         … and at the epoch's end (the NC4 decisions of the evaluation, the last row)
    in_run_loop_overhead  track_loop_s / (loop time − track_loop_s): the loop's slowdown from one run
                        (no run-to-run load noise; indirect costs such as cache pollution are not in it)
    in_run_overhead     (track_loop_s + track_end_s) / (the epoch's training + evaluation time − both):
                        the same for the whole epoch, evaluation included
    Also the load average before and after (a shared machine). `threads`: torch intra-op threads."""
    from lcfast.pipeline.train import train_run

    prev = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    kw = dict(layers=layers, width=width, context=context, batch_size=batch_size, lr=lr, seed=seed, device="cpu",
              steps_per_epoch=steps, eval_tokens=eval_tokens, epochs=1, progress=False)
    if track_every is not None:
        kw.update(track_nc=True, track_every=track_every)
    load0 = os.getloadavg()
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        res = train_run(data_dir, out_dir, **kw)
    finally:
        torch.set_num_threads(prev)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = steps * batch_size * context
    loop_s, tl, te = tokens / float(res["tokens_per_s"]), res.get("track_loop_s"), res.get("track_end_s")
    return {"layers": layers, "width": width, "steps": steps, "tokens": tokens, "track_every": track_every,
            "threads": threads, "loop_tokens_per_s": float(res["tokens_per_s"]), "wall_s": wall, "cpu_s": cpu,
            "epoch_s": float(res["elapsed"]), "track_loop_s": tl, "track_end_s": te,
            "in_run_loop_overhead": None if tl is None else tl / max(loop_s - tl, 1e-9),
            "in_run_overhead": None if tl is None else (tl + te) / max(float(res["elapsed"]) - tl - te, 1e-9),
            "val_loss": float(res["val_loss"]), "loadavg_start": list(load0), "loadavg_end": list(os.getloadavg())}


def overhead_summary(runs: list[dict], variant: str, baseline: str = "off") -> dict:
    """Medians over `runs` (dicts of `train_throughput` plus "variant" and "round") of `variant`
    against `baseline` for one model: loop tokens/s, wall and CPU seconds, and the overheads
    (1 − tokens/s ratio; CPU and wall ratios − 1), also as the median of the per-round ratios
    (each round runs both back to back, so a load change hits both)."""
    a = [r for r in runs if r["variant"] == variant]
    b = [r for r in runs if r["variant"] == baseline]
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    rounds = sorted({r["round"] for r in a} & {r["round"] for r in b})
    pair = lambda k: [next(r for r in a if r["round"] == i)[k] / next(r for r in b if r["round"] == i)[k]  # noqa: E731
                      for i in rounds]
    return {
        "variant": variant, "baseline": baseline, "n": len(a), "n_baseline": len(b),
        "loop_tokens_per_s": med(a, "loop_tokens_per_s"), "baseline_loop_tokens_per_s": med(b, "loop_tokens_per_s"),
        "wall_s": med(a, "wall_s"), "baseline_wall_s": med(b, "wall_s"),
        "cpu_s": med(a, "cpu_s"), "baseline_cpu_s": med(b, "cpu_s"),
        "loop_overhead": 1 - med(a, "loop_tokens_per_s") / med(b, "loop_tokens_per_s"),
        "cpu_overhead": med(a, "cpu_s") / med(b, "cpu_s") - 1,
        "wall_overhead": med(a, "wall_s") / med(b, "wall_s") - 1,
        "loop_overhead_paired": 1 - statistics.median(pair("loop_tokens_per_s")) if rounds else None,
        "cpu_overhead_paired": statistics.median(pair("cpu_s")) - 1 if rounds else None,
        **{k: (statistics.median(r[k] for r in a) if a and all(r.get(k) is not None for r in a) else None)
           for k in ("in_run_loop_overhead", "in_run_overhead")},
    }
