"""Token engine benchmark on an existing shard: open+verify, counting, windows, ambiguity.

    python bench/bench_engine.py [--shard S.lcshard | --tokens 100e6] [--vocab 50257]
                                 [--ambiguity-tokens 10e6] [--json out.json]

Without --shard, a Zipf-distributed uint16 shard is written with numpy alone following
docs/shard-format.md (which doubles as a check of the documented layout). Timings (best of 3):
  open+verify   TokenShard(path): header, payload XXH3 and id-range pass
  recount       TokenShard.recount(): parallel Rust histogram        (target ≥ 1 G tokens/s)
  numpy bincount  the same with np.bincount, for reference
  random windows  TokenShard.random_windows(64, 1024, ...)            (target ≥ 50 M tokens/s)
  seq windows     TokenShard.seq_windows(1024, ...)
  ambiguity       count_tokens(ambiguity=4) on the first --ambiguity-tokens tokens
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import tempfile
import time
from pathlib import Path

import numpy as np


def write_shard_numpy(path: Path, tokens: np.ndarray, doc_len: int, vocab: int) -> None:
    """Write a shard per docs/shard-format.md with numpy (fixed-length documents)."""
    from lcfast import _core

    n = tokens.size
    tb = tokens.dtype.itemsize
    offsets = np.append(np.arange(0, n, doc_len, dtype="<u8"), np.uint64(n))
    counts = np.bincount(tokens, minlength=vocab).astype("<u8")
    off_off = (128 + n * tb + 7) // 8 * 8
    cnt_off = off_off + 8 * offsets.size
    size = cnt_off + 8 * vocab
    pad = bytes(off_off - 128 - n * tb)
    payload = tokens.astype(tokens.dtype.newbyteorder("<")).tobytes() + pad + offsets.tobytes() + counts.tobytes()
    head = bytearray(128)
    head[0:8] = b"LCSHARD\0"
    struct.pack_into("<4I", head, 8, 1, 128, tb, vocab)
    struct.pack_into("<6Q", head, 24, n, offsets.size - 1, 128, off_off, cnt_off, size)
    struct.pack_into("<I", head, 88, 0xFFFFFFFF)
    struct.pack_into("<Q", head, 96, _core.xxh3_64(payload))
    struct.pack_into("<Q", head, 120, _core.xxh3_64(bytes(head[:120])))
    with open(path, "wb") as f:
        f.write(head)
        f.write(payload)


def best_of(fn, k=3):
    ts = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", type=Path)
    ap.add_argument("--tokens", type=float, default=100e6)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--ambiguity-tokens", type=float, default=5e6)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from lcfast import TokenShard, count_tokens
    from lcfast.data.shards import write_shard

    with tempfile.TemporaryDirectory(prefix="lcfast-bench-") as tmp:
        tmp = Path(tmp)
        path = args.shard
        if path is None:
            path = tmp / "zipf.lcshard"
            rng = np.random.default_rng(0)
            n = int(args.tokens)
            toks = np.empty(n, dtype=np.uint16)
            step = 1 << 24
            for a in range(0, n, step):  # Zipf ids, clipped to the vocabulary
                z = rng.zipf(1.1, size=min(step, n - a)) - 1
                toks[a : a + step] = np.minimum(z, args.vocab - 1)
            write_shard_numpy(path, toks, 200, args.vocab)
            del toks
        rep: dict = {"shard": str(path), "cpu_count": os.cpu_count(), "rayon_threads": os.environ.get("RAYON_NUM_THREADS")}
        s = TokenShard(path)
        n = s.n_tokens
        rep["n_tokens"] = n
        rep["dtype"] = s.dtype.name
        t = best_of(lambda: TokenShard(path))
        rep["open_verify_s"] = t
        rep["open_verify_gb_per_s"] = os.path.getsize(path) / t / 1e9
        t = best_of(lambda: TokenShard(path, verify=False))
        rep["open_noverify_s"] = t
        t = best_of(s.recount)
        rep["recount_s"] = t
        rep["recount_tokens_per_s"] = n / t
        assert np.array_equal(s.recount(), s.counts())
        t = best_of(lambda: np.bincount(s.tokens, minlength=s.vocab_size), k=1)
        rep["numpy_bincount_tokens_per_s"] = n / t
        B, T, steps = 64, 1024, 50
        t = best_of(lambda: [s.random_windows(B, T, 0, i) for i in range(steps)])
        rep["random_windows_tokens_per_s"] = steps * B * (T + 1) / t
        cnt = min(s.n_seq_windows(T), 3200)
        t = best_of(lambda: [s.seq_windows(T, a, min(64, cnt - a)) for a in range(0, cnt, 64)])
        rep["seq_windows_tokens_per_s"] = cnt * (T + 1) / t
        m = min(n, int(args.ambiguity_tokens))
        sub = tmp / "sub.lcshard"
        write_shard(sub, [np.asarray(s.tokens[:m])], vocab_size=s.vocab_size)
        t0 = time.perf_counter()
        res = count_tokens(sub, ambiguity=4, top=0)
        rep["ambiguity_k4_s"] = time.perf_counter() - t0
        rep["ambiguity_tokens"] = m
        rep["ambiguity"] = res["ambiguity"]

    print(f"shard: {n:,} tokens ({rep['dtype']}), {rep['cpu_count']} cores")
    print(f"open + verify (xxh3 + id range)  {rep['open_verify_s']:.3f} s   {rep['open_verify_gb_per_s']:.2f} GB/s")
    print(f"open, verify=False               {rep['open_noverify_s'] * 1e3:.2f} ms")
    print(f"recount (Rust histogram)         {rep['recount_tokens_per_s'] / 1e9:.2f} G tokens/s")
    print(f"numpy bincount (reference)       {rep['numpy_bincount_tokens_per_s'] / 1e9:.2f} G tokens/s")
    print(f"random windows B=64 T=1024       {rep['random_windows_tokens_per_s'] / 1e6:.0f} M tokens/s")
    print(f"seq windows T=1024               {rep['seq_windows_tokens_per_s'] / 1e6:.0f} M tokens/s")
    print(f"ambiguity K=4 on {m:,} tokens   {rep['ambiguity_k4_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2) + "\n")
    return rep


if __name__ == "__main__":
    main()
