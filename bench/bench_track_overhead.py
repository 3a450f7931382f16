#!/usr/bin/env python
"""Training throughput with and without `lcfast train --track-nc`, on the demo's models (CPU).

    python bench/bench_track_overhead.py [--work DIR] [--rounds 5] [--models 1x32,1x96] [--steps 60]
                                         [--every 10,60] [--baseline PYTHONPATH] [--json OUT]

Data: the `lcfast demo --quick` corpus and shards (2,500 synthetic stories, BPE vocabulary 2048),
built under --work on first use. Each run is one epoch of --steps optimizer steps at the demo's
settings (context 64, batch 32, lr 3e-3, one torch thread, as the demo's worker processes train),
in a fresh process, timed by `lcfast.benchmarks.train_throughput`. Variants: "off" (no tracking),
"every N" for each --every (`--track-nc --track-every N`; the demo tracks every 10 steps, 60 is one
row per epoch: the default), and with --baseline "off@baseline" (no tracking, lcfast imported from
that PYTHONPATH: the training hot path before this change). Every round runs every variant of every
model, in a rotated order, so the variants see the same load; the machine is shared, so medians
and per-round (paired) ratios are reported with the load average. `lcfast.benchmarks.overhead_summary`
gives: loop overhead (1 − the training loop's tokens/s ratio: the per-step statistics and the
mid-epoch rows), CPU overhead (the whole run's CPU time, evaluation with its NC4 decisions and the
epoch-end row included: the fairer number on a loaded machine), wall overhead, and the in-run
overheads: the seconds the tracker itself took, timed inside each tracked run, over the rest of
that run's training loop and over the rest of its epoch (training + evaluation) — immune to the
load changing between runs; indirect costs (cache pollution) are not in them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lcfast.benchmarks import demo_data, git_commit, machine_info, overhead_summary, write_json

HERE = Path(__file__).resolve().parent
BENCH_PKG = HERE.parent / "python" / "lcfast" / "benchmarks"

# the measured run, in a fresh interpreter: train_throughput is loaded from this checkout's
# lcfast.benchmarks (as a package of another name) so that the same timing code measures the
# baseline (whose lcfast comes from --baseline's PYTHONPATH)
CHILD = """
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("lcfast_bench_timing", os.path.join(sys.argv[1], "__init__.py"),
                                              submodule_search_locations=[sys.argv[1]])
m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m; spec.loader.exec_module(m)
kw = json.loads(sys.argv[2])
print(json.dumps(m.train_throughput(**kw)))
"""


def run_one(kw: dict, pythonpath: str) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, "-c", CHILD, str(BENCH_PKG), json.dumps(kw)], capture_output=True, text=True,
                       env=env, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"run {kw} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/lcfast-bench-track", help="data and run folders (runs are deleted)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="1x32,1x96", help="LAYERSxWIDTH, comma-separated (the --quick demo's)")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps (the --quick demo's epoch)")
    ap.add_argument("--every", default="10,60", help="--track-every values to measure")
    ap.add_argument("--baseline", help="PYTHONPATH of the code before the change (also measured, untracked)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = demo_data(work)  # the --quick demo's shards, built once
    here_path = str(HERE.parent / "python")
    models = [tuple(int(v) for v in m.split("x")) for m in args.models.split(",")]
    variants = [("off", None, here_path)] + [(f"every {n}", int(n), here_path) for n in args.every.split(",") if n]
    if args.baseline:
        variants.append(("off@baseline", None, args.baseline))
    res = {
        "benchmark": "track-overhead",
        "machine": machine_info(),
        "commit": git_commit(HERE), "baseline_pythonpath": args.baseline,
        "settings": {"steps": args.steps, "context": 64, "batch_size": 32, "lr": 3e-3, "threads": 1,
                     "data": "lcfast demo --quick shards (vocabulary 2048)"},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": [],
    }
    for rnd in range(args.rounds):
        for (layers, width) in models:
            k = (rnd + models.index((layers, width))) % len(variants)
            for name, every, pp in variants[k:] + variants[:k]:  # rotated: no variant always first
                out = work / "runs" / f"L{layers}_W{width}_{name.replace(' ', '').replace('@', '_')}"
                shutil.rmtree(out, ignore_errors=True)
                kw = dict(data_dir=str(data), out_dir=str(out), layers=layers, width=width, steps=args.steps,
                          track_every=every)
                r = {**run_one(kw, pp), "variant": name, "round": rnd, "model": f"L{layers}_W{width}"}
                shutil.rmtree(out, ignore_errors=True)
                res["runs"].append(r)
                print(f"round {rnd} L{layers}_W{width} {name:13s} loop {r['loop_tokens_per_s']:8,.0f} tok/s  "
                      f"wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  load {r['loadavg_start'][0]:.2f}",
                      flush=True)
    res["summary"] = []
    for (layers, width) in models:
        runs = [r for r in res["runs"] if r["model"] == f"L{layers}_W{width}"]
        for name, _, _ in variants[1:]:
            s = {"model": f"L{layers}_W{width}", **overhead_summary(runs, name)}
            res["summary"].append(s)
            inrun = "" if s["in_run_overhead"] is None else (
                f"  in-run: loop {100 * s['in_run_loop_overhead']:+5.1f}%, "
                f"epoch {100 * s['in_run_overhead']:+5.1f}%")
            print(f"L{layers}_W{width} {name:13s} vs off: loop {100 * s['loop_overhead']:+5.1f}% "
                  f"(paired {100 * s['loop_overhead_paired']:+5.1f}%)  cpu {100 * s['cpu_overhead']:+5.1f}% "
                  f"(paired {100 * s['cpu_overhead_paired']:+5.1f}%)  wall {100 * s['wall_overhead']:+5.1f}%{inrun}")
    res["loadavg_median"] = statistics.median(r["loadavg_start"][0] for r in res["runs"])
    res["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_json(args.json, res)


if __name__ == "__main__":
    main()
