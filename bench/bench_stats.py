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

A preset over `lcfast.benchmarks.cpu_twins` (problems, naive twins, agreement, timing through
torch.utils.benchmark): timings interleave fast and naive runs and report medians (the dev machine
is shared: medians of interleaved runs are the fair comparison). The twin runs in the same process,
on the same data.
"""

from __future__ import annotations

import argparse
import json
import os

# The dev machine is shared (2 cores, several users): spinning OpenMP workers then stall each other
# (observed 4× slower with the default active wait). Passive waiting applies to both twins alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import resource

import torch

from lcfast.benchmarks import machine_info, write_json
from lcfast.benchmarks.cpu_twins import bench_memory, bench_ncc, bench_pairwise, bench_update


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds (smoke run)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    q = args.quick
    res = {
        "machine": {"cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "platform": machine_info()["platform"], "load_avg_start": os.getloadavg()},
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
    write_json(args.json, res)


if __name__ == "__main__":
    main()
