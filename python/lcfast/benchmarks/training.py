"""Training throughput with and without `lcfast train --track-nc` (bench/bench_track_overhead.py),
and the --quick demo's data that it and bench/track_vs_exact.py train on.

Only stdlib, torch and this package at import time, lcfast itself inside the functions:
bench/bench_track_overhead.py loads this package from its file path in a child whose lcfast is an
older checkout, so that the same timing code measures both.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from .timing import Stopwatch


def demo_data(work: str | Path) -> Path:
    """The `lcfast demo --quick` corpus and shards (2,500 synthetic stories, BPE vocabulary 2048)
    under `work`, built on first use; returns the folder of the shards."""
    from lcfast.data.synth import write_corpus
    from lcfast.data.tokenize import tokenize_files
    from lcfast.pipeline.demo import QUICK

    work = Path(work)
    data = work / "data"
    if not (data / "train.lcshard").is_file():
        corpus = work / "corpus"
        write_corpus(corpus, n_stories=QUICK.n_stories, seed=QUICK.seed)
        tokenize_files([str(corpus / "stories.txt")], f"train:{QUICK.vocab}", str(data),
                       val_fraction=QUICK.val_fraction, seed=QUICK.seed)
    return data


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
    try:
        with Stopwatch() as sw:
            res = train_run(data_dir, out_dir, **kw)
    finally:
        torch.set_num_threads(prev)
    tokens = steps * batch_size * context
    loop_s, tl, te = tokens / float(res["tokens_per_s"]), res.get("track_loop_s"), res.get("track_end_s")
    return {"layers": layers, "width": width, "steps": steps, "tokens": tokens, "track_every": track_every,
            "threads": threads, "loop_tokens_per_s": float(res["tokens_per_s"]), "wall_s": sw.wall_s, "cpu_s": sw.cpu_s,
            "epoch_s": float(res["elapsed"]), "track_loop_s": tl, "track_end_s": te,
            "in_run_loop_overhead": None if tl is None else tl / max(loop_s - tl, 1e-9),
            "in_run_overhead": None if tl is None else (tl + te) / max(float(res["elapsed"]) - tl - te, 1e-9),
            "val_loss": float(res["val_loss"]), "loadavg_start": list(sw.loadavg_start),
            "loadavg_end": list(sw.loadavg_end)}


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
