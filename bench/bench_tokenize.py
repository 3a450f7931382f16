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
byte-level BPE is trained on its first megabyte (not timed). Best of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synth_corpus(path: Path, mb: float, seed: int = 0) -> None:
    r = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["the", "a", "and", "to", "was", "he", "she", "it", "they", "said"] + [
        "".join(r.choice(letters) for _ in range(r.randint(2, 9))) for _ in range(5000)
    ]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    names = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia"]
    target = int(mb * 1e6)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        while n < target:
            sents = []
            for _ in range(r.randint(3, 10)):
                ws = r.choices(vocab, weights, k=r.randint(4, 14))
                sents.append(f"{r.choice(names)} {' '.join(ws)}{r.choice(['.', '!', '?', ', she said.'])}")
            doc = " ".join(sents) + "\n\n"
            f.write(doc)
            n += len(doc)


def train_tokenizer(corpus: Path, vocab: int, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    text = corpus.read_text(encoding="utf-8")[:1_000_000]
    tok.train_from_iterator(text.split("\n\n"), trainer=trainer)
    tok.save(str(out))


def python_pipeline(corpus: Path, tok_path: Path, fast: bool) -> tuple[float, int]:
    from tokenizers import Tokenizer

    t0 = time.perf_counter()
    tok = Tokenizer.from_file(str(tok_path))
    eos = tok.token_to_id("<|endoftext|>")
    text = corpus.read_text(encoding="utf-8")
    docs = [d for d in text.split("\n\n") if d.strip()]
    enc = tok.encode_batch_fast if fast else tok.encode_batch
    dtype = np.uint16 if tok.get_vocab_size() <= 65536 else np.uint32
    parts = []
    for i in range(0, len(docs), 1000):
        for e in enc(docs[i : i + 1000], add_special_tokens=False):
            ids = e.ids
            ids.append(eos)
            parts.append(np.asarray(ids, dtype=dtype))
    tokens = np.concatenate(parts)
    counts = np.bincount(tokens, minlength=tok.get_vocab_size())
    dt = time.perf_counter() - t0
    assert counts.sum() == tokens.size
    return dt, int(tokens.size)


def lcfast_pipeline(corpus: Path, tok_path: Path, out: Path) -> tuple[float, int, dict]:
    from lcfast import tokenize_files

    t0 = time.perf_counter()
    meta = tokenize_files([corpus], tok_path, out, val_fraction=0.01, seed=0)
    return time.perf_counter() - t0, meta["tokens"]["total"], meta


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--mb", type=float, default=32.0, help="size of the synthetic corpus (without --corpus)")
    ap.add_argument("--tokenizer", type=Path)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lcfast-bench-") as tmp:
        tmp = Path(tmp)
        corpus = args.corpus
        if corpus is None:
            corpus = tmp / "corpus.txt"
            synth_corpus(corpus, args.mb)
        tok = args.tokenizer
        if tok is None:
            tok = tmp / "tokenizer.json"
            train_tokenizer(corpus, args.vocab, tok)
        size = corpus.stat().st_size
        res = {"lcfast": [], "python_encode_batch": [], "python_encode_batch_fast": []}
        n_l = n_p = 0
        meta = {}
        for r in range(args.repeat):
            dt, n_l, meta = lcfast_pipeline(corpus, tok, tmp / f"out{r}")
            res["lcfast"].append(dt)
            dt, n_p = python_pipeline(corpus, tok, fast=False)
            res["python_encode_batch"].append(dt)
            dt, _ = python_pipeline(corpus, tok, fast=True)
            res["python_encode_batch_fast"].append(dt)
        if n_l != n_p:
            print(f"WARNING: token totals differ: lcfast {n_l}, python {n_p}", file=sys.stderr)
        best = {k: min(v) for k, v in res.items()}
        base = min(best["python_encode_batch"], best["python_encode_batch_fast"])
        report = {
            "corpus_bytes": size,
            "tokens": n_l,
            "documents": meta["documents"]["total"],
            "vocab_size": meta["vocab_size"],
            "cpu_count": os.cpu_count(),
            "rayon_threads": meta["threads"],
            "fast_path": meta["tokenizer"]["fast_path"],
            "platform": platform.platform(),
            "seconds": best,
            "tokens_per_s": {k: n_l / v for k, v in best.items()},
            "speedup_vs_best_python": base / best["lcfast"],
        }
    print(f"corpus {size / 1e6:.1f} MB, {n_l:,} tokens, {report['documents']:,} documents, vocab {report['vocab_size']}, "
          f"{report['cpu_count']} cores (best of {args.repeat})")
    print(f"{'pipeline':<28}{'seconds':>10}{'M tokens/s':>12}{'MB/s':>9}")
    for k, v in best.items():
        print(f"{k:<28}{v:>10.2f}{n_l / v / 1e6:>12.2f}{size / v / 1e6:>9.1f}")
    print(f"lcfast speedup vs the faster Python pipeline: {report['speedup_vs_best_python']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
