"""Token engine benchmark: `lcfast.tokenize_files` vs the plain Python pipeline, same run.

    python bench/bench_tokenize.py [--corpus FILE.txt] [--mb 32] [--tokenizer tokenizer.json]
                                   [--vocab 8192] [--repeat 2] [--json out.json]

lcfast (end to end): read .txt → split documents → tokenize (Rust, rayon) → append EOS →
train/val split → count → write two shards (fsync'd).
Python baseline: read the file, split documents on blank lines, `tokenizers.Tokenizer.
encode_batch` (and `encode_batch_fast`, the faster of the two is the baseline) in batches of 1,000
documents, append EOS, `np.concatenate`, `np.bincount`. Both use every core (the tokenizers
library parallelises encode_batch with its own rayon pool). Without --corpus a deterministic
Zipf-distributed synthetic corpus is written to a temporary folder; without --tokenizer a
byte-level BPE is trained on its first megabyte (not timed). Best of --repeat runs, each a whole
run timed by its wall time (`lcfast.benchmarks.tokens.tokenize_comparison`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lcfast.benchmarks import write_json
from lcfast.benchmarks.tokens import tokenize_comparison


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--mb", type=float, default=32.0, help="size of the synthetic corpus (without --corpus)")
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    report = tokenize_comparison(args.corpus, args.tokenizer, args.mb, args.vocab, args.repeat)
    size, n_l, best = report["corpus_bytes"], report["tokens"], report["seconds"]
    print(f"corpus {size / 1e6:.1f} MB, {n_l:,} tokens, {report['documents']:,} documents, "
          f"vocab {report['vocab_size']}, "
          f"{report['cpu_count']} cores (best of {args.repeat})")
    print(f"{'pipeline':<28}{'seconds':>10}{'M tokens/s':>12}{'MB/s':>9}")
    for k, v in best.items():
        print(f"{k:<28}{v:>10.2f}{n_l / v / 1e6:>12.2f}{size / v / 1e6:>9.1f}")
    print(f"lcfast speedup vs the faster Python pipeline: {report['speedup_vs_best_python']:.2f}x")
    write_json(args.json, report, indent=2)
    return report


if __name__ == "__main__":
    main()
