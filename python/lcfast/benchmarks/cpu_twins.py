"""The measurement core against its naive twins on CPU at the sizes of issue 13 (bench/bench_stats.py):
ClassStats.update vs the one-hot matmul, the blocked pairwise sweep vs the C×C grids (and
measure_embeddings end to end), NCC vs the dense B×C matrices, and the pairwise sweep's peak memory
in a fresh process.

Fast and naive are timed in alternation, round after round, each round through
`torch.utils.benchmark` (the dev machine is shared: medians of interleaved runs are the fair
comparison); both twins run in the same process, on the same data.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

import torch

from .harness import F64
from .timing import Stopwatch, benchmark_timer, clock


def interleaved(fast, naive, rounds: int, fast_reps: int = 3) -> dict:
    """Median and best seconds per call of `fast` and `naive`, timed in alternation for `rounds`
    rounds. Per round, `fast` runs a blocked autorange of at least `fast_reps` times its warm-up
    call and `naive` one block (its own block-size estimate is one call more)."""
    t0 = clock()
    fast()  # warm-up (workspace, threads)
    t_fast = clock() - t0
    timers = benchmark_timer(fast), benchmark_timer(naive)
    tf: list[float] = []
    tn: list[float] = []
    runs = [0, 0]
    for _ in range(rounds):
        for i, (timer, min_run, out) in enumerate(((timers[0], fast_reps * t_fast, tf), (timers[1], 0.0, tn))):
            m = timer.blocked_autorange(min_run_time=min_run)
            out += [float(t) for t in m.times]
            runs[i] += m.number_per_run * len(m.times)
    return {
        "fast_median_s": statistics.median(tf), "fast_min_s": min(tf),
        "naive_median_s": statistics.median(tn), "naive_min_s": min(tn),
        "speedup_median": statistics.median(tn) / statistics.median(tf),
        "fast_runs": runs[0], "naive_runs": runs[1],
    }


def bench_update(C: int, d: int, B: int, rounds: int) -> dict:
    """ClassStats.update (torch backend, float32 features) vs class_stats_naive."""
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.naive import class_stats_naive

    g = torch.Generator().manual_seed(0)
    H = torch.randn(B, d, generator=g)  # float32 features, as a model produces them
    Y = torch.randint(0, C, (B,), generator=g)
    st = ClassStats(C, d)
    res = interleaved(lambda: st.update(H, Y, backend="torch"), lambda: class_stats_naive(H, Y, C), rounds)
    res.update(C=C, d=d, B=B)
    return res


def bench_pairwise(C: int, d: int, rounds: int, n_per: int = 16) -> dict:
    """pairwise_torch vs pairwise_naive(exact=False) on C centred means, their agreement, and
    measure_embeddings end to end on n_per·C samples (covariance on)."""
    import lcfast
    from lcfast.stats.naive import pairwise_naive
    from lcfast.stats.pairwise import pairwise_torch

    g = torch.Generator().manual_seed(1)
    M = torch.randn(C, d, generator=g, dtype=F64)
    M -= M.mean(0)
    var = torch.rand(C, generator=g, dtype=F64)
    res = interleaved(lambda: pairwise_torch(M, var), lambda: pairwise_naive(M, var, exact=False), rounds, fast_reps=2)
    a, b = pairwise_torch(M, var), pairwise_naive(M, var, exact=False)
    res["max_rel_diff_cdnv_mean"] = abs(a.cdnv.mean - b.cdnv.mean) / abs(b.cdnv.mean)
    res["max_rel_diff_cos_var"] = abs(a.cos.var - b.cos.var) / abs(b.cos.var)
    mu = torch.randn(C, d, generator=g) * 2
    Y = torch.arange(C).repeat(n_per)
    H = mu[Y] + torch.randn(len(Y), d, generator=g)
    W = mu + torch.randn(C, d, generator=g)
    with Stopwatch() as sw:
        r = lcfast.measure_embeddings(H, Y, W, backend="torch")
    res["measure_embeddings_s"] = sw.wall_s
    res["measure_embeddings_N"] = len(Y)
    res["nc1_cdnv"] = r["nc1_cdnv"]
    res.update(C=C, d=d)
    return res


def bench_ncc(C: int, d: int, B: int, rounds: int) -> dict:
    """ncc_torch (blocked running argmin/argmax) vs ncc_naive (the full B×C matrices)."""
    from lcfast.stats.naive import ncc_naive
    from lcfast.stats.ncc import ncc_torch

    g = torch.Generator().manual_seed(2)
    means = torch.randn(C, d, generator=g, dtype=F64)
    ids = torch.arange(C)
    W = torch.randn(C, d, generator=g)
    H = torch.randn(B, d, generator=g)
    res = interleaved(lambda: ncc_torch(H, means, ids, W), lambda: ncc_naive(H, means, ids, W), rounds, fast_reps=1)
    res.update(C=C, d=d, B=B)
    return res


_MEM_CHILD = r"""
import json, sys, torch
from lcfast.benchmarks.timing import Stopwatch
from lcfast.stats.pairwise import pairwise_torch

def status(key):  # kB values from /proc/self/status (VmHWM = peak RSS of this process image)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

def reset_peak():  # "5" → clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False

C, d, block = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
g = torch.Generator().manual_seed(3)
M = torch.randn(C, d, generator=g, dtype=torch.float64); M -= M.mean(0)
var = torch.rand(C, generator=g, dtype=torch.float64)
pairwise_torch(M[:600], var[:600], block=block)  # load kernels / thread pools
reset = reset_peak()
before = status("VmHWM")
rss0 = status("VmRSS")
with Stopwatch() as sw:
    ps = pairwise_torch(M, var, block=block)
after = status("VmHWM")
print(json.dumps({"C": C, "d": d, "block": block, "seconds": sw.wall_s, "peak_reset": reset,
                  "rss_before_kb": rss0, "hwm_before_kb": before,
                  "hwm_after_kb": after, "peak_growth_mb": (after - rss0) / 1024,
                  "inputs_mb": (M.numel() + var.numel()) * 8 / 2**20,
                  "pairs": C * (C - 1) // 2, "cdnv_mean": ps.cdnv.mean, "degenerate": ps.degenerate}))
"""


def bench_memory(C: int, d: int, block: int) -> dict:
    """Peak memory of pairwise_torch at C means of width d, in a fresh process: the growth of the
    peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS before the sweep, next to
    one C×C float64 grid (what the naive twin holds several of)."""
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(C), str(d), str(block)],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["full_grid_one_CxC_f64_mb"] = C * C * 8 / 2**20
    res["C_times_d_f64_mb"] = C * d * 8 / 2**20
    return res
