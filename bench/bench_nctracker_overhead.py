#!/usr/bin/env python
"""Cost of `lcfast.NCTracker` per training step of a tiny GPT-2 on the CPU, with and without `layers`.

    python bench/bench_nctracker_overhead.py [--widths 32,96] [--every 10] [--rounds 6] [--json OUT]

The model: transformers GPT-2, 2 blocks, vocabulary 2048, context 64, batch 32 (the demo's sizes:
2,048 tokens per step), widths --widths, AdamW, one torch thread (as the demo's workers train).
Variants: "off" (no tracker), "head" (the head input), "head+layers" (also `layers=[0, 1]`), all
with the default covariance=True. One process: each round runs a block of `every` optimizer steps
per variant, in a rotated order, so every variant sees the same load (the machine is shared); a
tracked block ends with its row (the tracker's whole cost: per-step accumulation and one row).

Reported per variant: median block seconds; the overhead against "off" as the median of per-round
(paired) ratios; and the in-run share, tracker.seconds (the tracker's own time, timed inside the
block) over the rest of the block — immune to the load changing between blocks; the forward hooks'
few Python calls outside `seconds` and indirect costs (cache) are not in it. The tracker's time is
split into accumulation per step and one row's metrics (tracker.seconds_rows), which projects the
share at other intervals: (accumulate + row / every) / untracked step. Tokens are uniform over the
vocabulary, so nearly every class is seen in an interval: the costliest case for a row (its
pairwise sweep is over the classes seen). The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import torch

import lcfast
from lcfast.benchmarks import git_commit, machine_info, write_json

HERE = Path(__file__).resolve().parent
VOCAB, CONTEXT, BATCH, LAYERS = 2048, 64, 32, 2


def make(width: int):
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_embd=width, n_layer=LAYERS, n_head=2, n_positions=CONTEXT,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg).train()
    return model, torch.optim.AdamW(model.parameters(), lr=3e-3)


def block(model, opt, steps: int, gen: torch.Generator, tracker) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        x = torch.randint(0, VOCAB, (BATCH, CONTEXT), generator=gen)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if tracker is not None:
            tracker.step()
    return time.perf_counter() - t0


def bench_width(width: int, every: int, rounds: int) -> dict:
    model, opt = make(width)
    gen = torch.Generator().manual_seed(0)
    variants = {"off": None, "head": [], "head+layers": [0, 1]}
    names = list(variants)
    times = {v: [] for v in names}
    own = {v: [] for v in names}
    rows = {v: [] for v in names}
    block(model, opt, 3, gen, None)  # warm-up (allocator, first AdamW step)
    for r in range(rounds):
        for v in names[r % len(names):] + names[: r % len(names)]:
            tracker = None if variants[v] is None else lcfast.NCTracker(model, every=every, layers=variants[v])
            t = block(model, opt, every, gen, tracker)
            times[v].append(t)
            if tracker is not None:
                own[v].append(tracker.seconds)
                rows[v].append(tracker.seconds_rows)
                tracker.close()
    out = {"width": width, "params": sum(p.numel() for p in model.parameters()), "variants": {}}
    for v in names:
        med = statistics.median(times[v])
        row = {"block_s": times[v], "median_block_s": med, "median_step_ms": 1e3 * med / every}
        if v != "off":
            paired = [t / o - 1 for t, o in zip(times[v], times["off"])]
            row["overhead_paired_median"] = statistics.median(paired)
            row["overhead_ratio_of_medians"] = med / statistics.median(times["off"]) - 1
            share = [s / (t - s) for s, t in zip(own[v], times[v])]
            row["tracker_s"] = own[v]
            row["in_run_share_median"] = statistics.median(share)
            row["tracker_ms_per_step_median"] = 1e3 * statistics.median(own[v]) / every
            # the two parts, to project other intervals: accumulation per step, and one row's metrics
            acc = statistics.median([(s - q) / every for s, q in zip(own[v], rows[v])])
            one_row = statistics.median(rows[v])
            step_off = statistics.median(times["off"]) / every
            row["accumulate_ms_per_step"] = 1e3 * acc
            row["row_ms"] = 1e3 * one_row
            row["projected_share"] = {str(n): (acc + one_row / n) / step_off for n in (1, 10, 50, 100)}
        out["variants"][v] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="32,96")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--json", default=None, help="default bench/results/cpu-2core_nctracker-overhead_DATE.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    date = datetime.date.today().isoformat()
    load_before = os.getloadavg()
    t0 = time.time()
    results = [bench_width(int(w), a.every, a.rounds) for w in a.widths.split(",")]
    load_after = os.getloadavg()
    doc = {"bench": "nctracker-overhead", "date": date, "commit": git_commit(HERE),
           "machine": machine_info(torch=torch.__version__, threads=1), "loadavg_before": load_before,
           "loadavg_after": load_after, "seconds": round(time.time() - t0, 1),
           "settings": {"vocab": VOCAB, "context": CONTEXT, "batch": BATCH, "layers": LAYERS, "every": a.every,
                        "rounds": a.rounds, "covariance": True, "optimizer": "AdamW"},
           "results": results}
    path = a.json or HERE / "results" / f"cpu-2core_nctracker-overhead_{date}.json"
    write_json(path, doc)
    print(f"load average {load_before[0]:.1f} → {load_after[0]:.1f} (2 cores); every {a.every}, {a.rounds} rounds")
    for r in results:
        off = r["variants"]["off"]["median_step_ms"]
        for v, row in r["variants"].items():
            if v == "off":
                print(f"width {r['width']:3d}  off          {off:7.1f} ms/step")
                continue
            p = row["projected_share"]
            print(f"width {r['width']:3d}  {v:12s} {row['median_step_ms']:7.1f} ms/step  tracker "
                  f"{row['tracker_ms_per_step_median']:5.2f} ms/step = {100 * row['in_run_share_median']:4.1f}% "
                  f"in-run; paired {100 * row['overhead_paired_median']:+5.1f}%; accumulate "
                  f"{row['accumulate_ms_per_step']:.2f} ms/step, one row {row['row_ms']:.0f} ms → every 50: "
                  f"{100 * p['50']:.1f}%, every 100: {100 * p['100']:.1f}%")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
