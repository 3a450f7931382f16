"""Token engine benchmark on an existing shard: open+verify, counting, windows, ambiguity.

    python bench/bench_engine.py [--shard S.lcshard | --tokens 100e6] [--vocab 50257]
                                 [--ambiguity-tokens 10e6] [--json out.json]

Without --shard, a Zipf-distributed uint16 shard is written with numpy alone following
docs/shard-format.md (which doubles as a check of the documented layout). Timings (best of the
blocks torch.utils.benchmark times, at least 3 calls' worth; `lcfast.benchmarks.tokens`):
  open+verify   TokenShard(path): header, payload XXH3 and id-range pass
  recount       TokenShard.recount(): parallel Rust histogram        (target ≥ 1 G tokens/s)
  numpy bincount  the same with np.bincount, for reference
  random windows  TokenShard.random_windows(64, 1024, ...)            (target ≥ 50 M tokens/s)
  seq windows     TokenShard.seq_windows(1024, ...)
  ambiguity       count_tokens(ambiguity=4) on the first --ambiguity-tokens tokens (one run, wall time)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from lcfast.benchmarks import write_json
from lcfast.benchmarks.tokens import engine_timings, write_zipf_shard


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shard", type=Path)
    ap.add_argument("--tokens", type=float, default=100e6)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--ambiguity-tokens", type=float, default=5e6)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lcfast-bench-") as tmp:
        path = args.shard
        if path is None:
            path = Path(tmp) / "zipf.lcshard"
            write_zipf_shard(path, int(args.tokens), args.vocab)
        rep = engine_timings(path, int(args.ambiguity_tokens), Path(tmp))

    n, m = rep["n_tokens"], rep["ambiguity_tokens"]
    print(f"shard: {n:,} tokens ({rep['dtype']}), {rep['cpu_count']} cores")
    print(f"open + verify (xxh3 + id range)  {rep['open_verify_s']:.3f} s   {rep['open_verify_gb_per_s']:.2f} GB/s")
    print(f"open, verify=False               {rep['open_noverify_s'] * 1e3:.2f} ms")
    print(f"recount (Rust histogram)         {rep['recount_tokens_per_s'] / 1e9:.2f} G tokens/s")
    print(f"numpy bincount (reference)       {rep['numpy_bincount_tokens_per_s'] / 1e9:.2f} G tokens/s")
    print(f"random windows B=64 T=1024       {rep['random_windows_tokens_per_s'] / 1e6:.0f} M tokens/s")
    print(f"seq windows T=1024               {rep['seq_windows_tokens_per_s'] / 1e6:.0f} M tokens/s")
    print(f"ambiguity K=4 on {m:,} tokens   {rep['ambiguity_k4_s']:.2f} s")
    write_json(args.json, rep, indent=2)
    return rep


if __name__ == "__main__":
    main()
