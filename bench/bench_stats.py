#!/usr/bin/env python
"""Side-by-side CPU timings of the measurement core against its naive twins (torch backend).

    python bench/bench_stats.py [--quick] [--json OUT.json] [--skip-memory]

1. ClassStats.update (scatter, per-class references) vs the one-hot matmul accumulation
   (class_stats_naive: B×C float64 one-hot, Σh and Σ‖h‖² by matmul) at C=8192, d=256, B=16384.
2. Pairwise statistics at C=4096, d=256: the blocked upper-triangle sweep (pairwise_torch) vs the
   full-grid twin (pairwise_naive(exact=False): C×C Gram, distance, cos, log, cdnv grids); plus
   measure_embeddings end to end (N = 16 samples per class, covariance on).
3. NCC agreement (ncc_torch, blocked running argmin/argmax) vs the full B×C matrices.
4. Peak memory of the pairwise sweep at C=25,129 and C=50,257, d=64, measured in a fresh
   subprocess as the growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the
   RSS before the sweep (inputs already allocated), against one C×C float64 grid (20 GB at 50,257).

Timings interleave fast and naive runs and report medians (the dev machine is shared: medians of
interleaved runs are the fair comparison). The twin runs in the same process, on the same data.
"""

from __future__ import annotations

import argparse
import json
import os

# The dev machine is shared (2 cores, several users): spinning OpenMP workers then stall each other
# (observed 4× slower with the default active wait). Passive waiting applies to both twins alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from lcfast.stats.classstats import ClassStats
from lcfast.stats.naive import class_stats_naive, ncc_naive, pairwise_naive
from lcfast.stats.ncc import ncc_torch
from lcfast.stats.pairwise import pairwise_torch

F64 = torch.float64


def _time(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def interleaved(fast, naive, rounds, fast_reps=3):
    fast()  # warm-up (workspace, threads)
    tf, tn = [], []
    for _ in range(rounds):
        tf += _time(fast, fast_reps)
        tn += _time(naive, 1)
    return {
        "fast_median_s": statistics.median(tf), "fast_min_s": min(tf),
        "naive_median_s": statistics.median(tn), "naive_min_s": min(tn),
        "speedup_median": statistics.median(tn) / statistics.median(tf),
        "fast_runs": len(tf), "naive_runs": len(tn),
    }


def bench_update(C, d, B, rounds):
    g = torch.Generator().manual_seed(0)
    H = torch.randn(B, d, generator=g)  # float32 features, as a model produces them
    Y = torch.randint(0, C, (B,), generator=g)
    st = ClassStats(C, d)
    res = interleaved(lambda: st.update(H, Y, backend="torch"), lambda: class_stats_naive(H, Y, C), rounds)
    res.update(C=C, d=d, B=B)
    return res


def bench_pairwise(C, d, rounds, n_per=16):
    g = torch.Generator().manual_seed(1)
    M = torch.randn(C, d, generator=g, dtype=F64)
    M -= M.mean(0)
    var = torch.rand(C, generator=g, dtype=F64)
    res = interleaved(lambda: pairwise_torch(M, var), lambda: pairwise_naive(M, var, exact=False), rounds, fast_reps=2)
    a, b = pairwise_torch(M, var), pairwise_naive(M, var, exact=False)
    res["max_rel_diff_cdnv_mean"] = abs(a.cdnv.mean - b.cdnv.mean) / abs(b.cdnv.mean)
    res["max_rel_diff_cos_var"] = abs(a.cos.var - b.cos.var) / abs(b.cos.var)
    # measure_embeddings end to end on N = n_per·C samples
    import lcfast

    mu = torch.randn(C, d, generator=g) * 2
    Y = torch.arange(C).repeat(n_per)
    H = mu[Y] + torch.randn(len(Y), d, generator=g)
    W = mu + torch.randn(C, d, generator=g)
    t0 = time.perf_counter()
    r = lcfast.measure_embeddings(H, Y, W, backend="torch")
    res["measure_embeddings_s"] = time.perf_counter() - t0
    res["measure_embeddings_N"] = len(Y)
    res["nc1_cdnv"] = r["nc1_cdnv"]
    res.update(C=C, d=d)
    return res


def bench_ncc(C, d, B, rounds):
    g = torch.Generator().manual_seed(2)
    means = torch.randn(C, d, generator=g, dtype=F64)
    ids = torch.arange(C)
    W = torch.randn(C, d, generator=g)
    H = torch.randn(B, d, generator=g)
    res = interleaved(lambda: ncc_torch(H, means, ids, W), lambda: ncc_naive(H, means, ids, W), rounds, fast_reps=1)
    res.update(C=C, d=d, B=B)
    return res


_MEM_CHILD = r"""
import json, sys, time, torch
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
t0 = time.perf_counter()
ps = pairwise_torch(M, var, block=block)
dt = time.perf_counter() - t0
after = status("VmHWM")
print(json.dumps({"C": C, "d": d, "block": block, "seconds": dt, "peak_reset": reset,
                  "rss_before_kb": rss0, "hwm_before_kb": before,
                  "hwm_after_kb": after, "peak_growth_mb": (after - rss0) / 1024,
                  "inputs_mb": (M.numel() + var.numel()) * 8 / 2**20,
                  "pairs": C * (C - 1) // 2, "cdnv_mean": ps.cdnv.mean, "degenerate": ps.degenerate}))
"""


def bench_memory(C, d, block):
    out = subprocess.run([sys.executable, "-c", _MEM_CHILD, str(C), str(d), str(block)],
                         capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["full_grid_one_CxC_f64_mb"] = C * C * 8 / 2**20
    res["C_times_d_f64_mb"] = C * d * 8 / 2**20
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds (smoke run)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    q = args.quick
    res = {
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "platform": platform.platform(), "load_avg_start": os.getloadavg()},
    }
    res["class_stats_update"] = bench_update(2048 if q else 8192, 256, 4096 if q else 16384, 2 if q else 5)
    print("class_stats_update", json.dumps(res["class_stats_update"], indent=1))
    res["pairwise"] = bench_pairwise(1024 if q else 4096, 256, 1 if q else 3)
    print("pairwise", json.dumps(res["pairwise"], indent=1))
    res["ncc"] = bench_ncc(2048 if q else 8192, 256, 1024 if q else 4096, 1 if q else 3)
    print("ncc", json.dumps(res["ncc"], indent=1))
    if not args.skip_memory:  # two sizes: the growth should scale like C·d (not C²)
        res["pairwise_memory"] = [bench_memory(C, 64, 512) for C in ((2500, 5000) if q else (25129, 50257))]
        print("pairwise_memory", json.dumps(res["pairwise_memory"], indent=1))
    res["machine"]["load_avg_end"] = os.getloadavg()
    res["machine"]["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
