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
  float64; and its default, float32 products with float64 near-tie decisions) and, on CUDA,
  ``ncc_triton`` per precision; naive: the dense B×K distance and B×C logit
  matrices (float64 on CPU, float32 on CUDA: the obvious implementation a user would write).

Timing: one warm-up call (compiles Triton kernels; its result is the one compared), then
``torch.utils.benchmark``'s blocked autorange for at least ``repeats`` times the warm-up's duration
within a per-implementation time budget; the median seconds per call is reported (the Timer
synchronizes CUDA around each block). Agreement: every row is compared with a reference result
— the naive twin's when it ran, else the float64 torch twin's — and the relative error (or the
share of identical predictions, for NCC) is printed. Before a naive twin runs, its memory is
estimated and compared with the free memory of the device; when it does not fit, the table says so
and the family is re-run at the largest size that fits (marked "reduced"), so a speed-up is still
measured. Throughput: class statistics in GB/s against the minimum traffic of an in-place update
(H read once, labels, read + write of the touched accumulator rows and their shift rows); pairwise
and NCC in TFLOP/s of the useful matrix work (pairs c < c′: C(C−1)·d flops; NCC: 2·B·d·(K + C)),
each as a fraction of the device's peak when the device is known (H100 SXM / PCIe, H200).

Modules: harness (sizes, peaks, rows, the per-family context), e2e (`--sizes e2e`: the whole measurement
against the paper's pipeline, stage by stage, with the GEMM floor), timing (torch.utils.benchmark and
whole-run wall time), stats (the three families), runner (`run_bench`), display (tables),
bandwidth, cpu_twins, tokens, training (the stand-alone benchmarks of bench/).
"""

from __future__ import annotations

from .bandwidth import classstats_bandwidth, classstats_min_bytes
from .display import print_bench_table, render_table, table_rows
from .harness import SIZES, BenchRow, device_peaks, free_bytes, git_commit, machine_info, write_json, zipf_labels
from .runner import run_bench
from .stats import FAMILIES
from .timing import Stopwatch, time_best, time_call, time_median
from .training import demo_data, overhead_summary, train_throughput

__all__ = ["SIZES", "device_peaks", "run_bench", "render_table", "print_bench_table", "table_rows", "BenchRow",
           "train_throughput", "overhead_summary", "demo_data", "FAMILIES", "free_bytes", "zipf_labels",
           "classstats_bandwidth", "classstats_min_bytes", "git_commit", "machine_info", "write_json", "Stopwatch",
           "time_best", "time_call", "time_median"]
