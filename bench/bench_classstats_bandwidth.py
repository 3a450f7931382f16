#!/usr/bin/env python
"""ClassStats.update against the machine's memory bandwidth, side by side in one run (CPU).

    python bench/bench_classstats_bandwidth.py [--quick] [--threads 1,2] [--modes one-pass,...]
                                               [--labels uniform,zipf] [--rounds 5] [--json OUT]

For each (labels, mode, threads): the update's median time, its bandwidth against the minimum
traffic of an in-place update (H read once, labels, and per class present a read of its
reference row and a read-modify-write of its float64 row; `lcfast.benchmarks.classstats_min_bytes`),
a plain float32 tensor copy moving the same number of bytes, and the ratio (per round, median).
Default size: C = 8192, d = 256, B = 16384 float32 rows (issue 13). The machine's load average is
recorded at the start and end of every case (the dev machine is shared). A preset over
`lcfast.benchmarks.bandwidth` (timing through torch.utils.benchmark). `commit` is the checkout
the script ran from; `lcfast_imported_from` says which lcfast was measured (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os

# The dev machine is shared (2 cores, several users): spinning OpenMP workers then stall each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import time

import torch

import lcfast
from lcfast.benchmarks import classstats_bandwidth, git_commit, machine_info, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="B = 4096, 2 rounds (smoke run)")
    ap.add_argument("--C", type=int, default=8192)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--B", type=int, default=16384)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--labels", default="uniform,zipf")
    ap.add_argument("--modes", default="one-pass,two-pass,covariance")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-run-time", type=float, default=0.3)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--label", default="", help="free text stored in the JSON (e.g. which code was measured)")
    args = ap.parse_args()
    B, rounds = (4096, 2) if args.quick else (args.B, args.rounds)
    res = {
        "benchmark": "classstats-bandwidth",
        "machine": machine_info(torch_threads_default=torch.get_num_threads(), torch=torch.__version__),
        "commit": git_commit(os.path.dirname(os.path.abspath(__file__))),
        "label": args.label,
        "lcfast_imported_from": os.path.dirname(lcfast.__file__),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cases": [],
    }
    for labels in args.labels.split(","):
        for mode in args.modes.split(","):
            for th in (int(t) for t in args.threads.split(",")):
                r = classstats_bandwidth(args.C, args.d, B, labels=labels, mode=mode, threads=th, rounds=rounds,
                                         min_run_time=args.min_run_time)
                res["cases"].append(r)
                print(f"{labels:7s} {mode:10s} threads={th}: update {r['update_s'] * 1e3:7.2f} ms "
                      f"{r['update_gbs']:5.1f} GB/s | copy {r['copy_gbs']:5.1f} GB/s | ratio {100 * r['ratio']:5.1f}% "
                      f"| load {r['loadavg_start'][0]:.2f}→{r['loadavg_end'][0]:.2f}", flush=True)
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(args.json, res)


if __name__ == "__main__":
    main()
