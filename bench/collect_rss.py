#!/usr/bin/env python
"""Memory of `lcfast collect` on a long run: RSS sampled over a pass of N tokens (default 100M).

    python bench/collect_rss.py [--tokens 100000000] [--collect-tokens N] [--vocab 512] [--work DIR] [--json OUT.json]

1. writes a synthetic train shard of N tokens (Zipf-like ids, documents of 50..2000 tokens) and a
   small val shard into WORK/data (reused when present with the same N),
2. makes a tiny model run on it (`lcfast train`, 1 step: the weights do not matter here),
3. runs `lcfast collect RUN --device cpu --save-every 20` in a subprocess and samples its
   /proc/PID/status every 0.5 s: VmRSS = RssAnon (heap: model, accumulators, batches) + RssFile
   (pages of the memory-mapped shard, reclaimable page cache counted while mapped) + RssShmem.
   The claim is that RssAnon stays flat (bounded by model + accumulator + one batch), independent
   of N; RssFile grows with the portion of the shard touched and is released to the kernel on demand.

Not part of CI (minutes of CPU). Reports the RSS at 10%/50%/90% of the run, the max, and the
slope of RssAnon over the second half (MB per 10M tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lcfast.benchmarks import Stopwatch, write_json


def make_data(work: Path, n_tokens: int, vocab: int, seed: int = 0) -> Path:
    from lcfast.data.shards import TokenShard, write_shard

    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train = data / "train.lcshard"
    if train.is_file():
        try:
            if TokenShard(train, verify=False).n_tokens == n_tokens:
                return data
        except Exception:  # noqa: BLE001
            pass
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1) ** 1.1
    p /= p.sum()
    with Stopwatch() as sw:
        ids = rng.choice(vocab, size=n_tokens, p=p).astype(np.int64)
        lengths = []
        left = n_tokens
        while left > 0:
            k = int(min(left, rng.integers(50, 2000)))
            lengths.append(k)
            left -= k
        bounds = np.cumsum([0] + lengths)
        docs = [ids[bounds[i]:bounds[i + 1]] for i in range(len(lengths))]
        write_shard(train, docs, vocab, tokenizer_fingerprint="0" * 32)
        del ids, docs
        val = rng.choice(vocab, size=20_000, p=p).astype(np.int64)
        write_shard(data / "val.lcshard", [val[:10_000], val[10_000:]], vocab, tokenizer_fingerprint="0" * 32)
    print(f"wrote {n_tokens:,}-token shard in {sw.wall_s:.1f} s", flush=True)
    return data


def status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                    out[k] = int(v.split()[0]) // 1024  # MiB
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100_000_000)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lcfast-collect-rss"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--collect-tokens", type=int, default=None,
                    help="collect only the first N positions of the shard (--max-tokens), when time is short")
    a = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    data = make_data(a.work, a.tokens, a.vocab)
    run = a.work / "run"
    py = [sys.executable, "-m", "lcfast"]
    if not (run / "config.json").is_file():
        subprocess.run(py + ["train", "--data", str(data), "--out", str(run), "--layers", "1", "--width", "16",
                             "--context", str(a.context), "--batch-size", "4", "--steps-per-epoch", "1",
                             "--eval-tokens", "256", "--device", "cpu", "--no-progress"], check=True, env=env)
    out = a.work / "collect"
    cmd = py + ["collect", str(run), "--out", str(out), "--restart", "--device", "cpu", "--no-progress",
                "--save-every", "20", "--batch-size", str(a.batch_size), "--json"]
    if a.collect_tokens:
        cmd += ["--max-tokens", str(a.collect_tokens)]
    with Stopwatch() as sw:  # the whole collect process, its memory sampled meanwhile
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        samples = []
        while proc.poll() is None:
            s = status(proc.pid)
            if s:
                samples.append({"t": round(sw.elapsed_s, 2), **s})
            time.sleep(0.5)
        stdout, stderr = proc.communicate()
    wall = sw.wall_s
    if proc.returncode != 0:
        sys.exit(f"collect failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    summary = json.loads(stdout)[0]
    tokens = summary["passes"]["train"]["tokens"]

    def at(frac: float) -> dict:
        return samples[min(len(samples) - 1, int(frac * len(samples)))]

    half = [s for s in samples if s["t"] >= wall / 2 and "RssAnon" in s]
    slope = None
    if len(half) > 2:
        t = np.array([s["t"] for s in half])
        y = np.array([s["RssAnon"] for s in half])
        mb_per_s = float(np.polyfit(t, y, 1)[0])
        slope = mb_per_s * wall / tokens * 1e7  # MB per 10M tokens
    res = {
        "tokens": tokens, "wall_s": round(wall, 1), "tokens_per_s": round(tokens / wall),
        "vocab": a.vocab, "context": a.context, "batch_size": a.batch_size, "n_samples": len(samples),
        "rss_mib": {f"{int(f * 100)}%": at(f) for f in (0.1, 0.5, 0.9)},
        "max_mib": {k: max(s.get(k, 0) for s in samples) for k in ("VmRSS", "RssAnon", "RssFile")},
        "rss_anon_slope_mib_per_10M_tokens_second_half": slope,
        "shard_mib": round((data / "train.lcshard").stat().st_size / 2**20),
        "samples": samples,
    }
    text = json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2)
    print(text)
    write_json(a.json, res, indent=2)


if __name__ == "__main__":
    main()
