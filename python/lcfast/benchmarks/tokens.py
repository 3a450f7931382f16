"""The token engine against plain Python and numpy (bench/bench_engine.py, bench/bench_tokenize.py):
the problem builders (a Zipf shard written with numpy alone, a synthetic corpus, a BPE tokenizer),
the Python baseline, and the timings.

In-process calls are timed through `torch.utils.benchmark` (`time_best`); a whole tokenize run
(read, tokenize, split, count, write and fsync shards) is one run, timed by its wall time.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
from pathlib import Path

import numpy as np

from .timing import Stopwatch, time_best

# ------------------------------------------------------------------------------------------------
# shard reading (bench/bench_engine.py)
# ------------------------------------------------------------------------------------------------


def write_shard_numpy(path: Path, tokens: np.ndarray, doc_len: int, vocab: int) -> None:
    """Write a shard per docs/shard-format.md with numpy (fixed-length documents of `doc_len`
    tokens); doubles as a check of the documented layout."""
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


def write_zipf_shard(path: Path, n_tokens: int, vocab: int, seed: int = 0) -> None:
    """A shard of `n_tokens` uint16 Zipf(1.1) ids clipped to `vocab`, in documents of 200 tokens."""
    rng = np.random.default_rng(seed)
    toks = np.empty(n_tokens, dtype=np.uint16)
    step = 1 << 24
    for a in range(0, n_tokens, step):
        z = rng.zipf(1.1, size=min(step, n_tokens - a)) - 1
        toks[a : a + step] = np.minimum(z, vocab - 1)
    write_shard_numpy(path, toks, 200, vocab)


def engine_timings(path: Path, ambiguity_tokens: int, work: Path) -> dict:
    """Best-of timings of the token engine on the shard at `path`: open + verify, open without
    verifying, recount (and numpy's bincount), random and sequential windows, and the ambiguity
    count (K = 4) of its first `ambiguity_tokens` tokens (a shard written under `work`)."""
    from lcfast import TokenShard, count_tokens
    from lcfast.data.shards import write_shard

    rep: dict = {"shard": str(path), "cpu_count": os.cpu_count(), "rayon_threads": os.environ.get("RAYON_NUM_THREADS")}
    s = TokenShard(path)
    n = s.n_tokens
    rep["n_tokens"] = n
    rep["dtype"] = s.dtype.name
    t = time_best(lambda: TokenShard(path))
    rep["open_verify_s"] = t
    rep["open_verify_gb_per_s"] = os.path.getsize(path) / t / 1e9
    rep["open_noverify_s"] = time_best(lambda: TokenShard(path, verify=False))
    t = time_best(s.recount)
    rep["recount_s"] = t
    rep["recount_tokens_per_s"] = n / t
    if not np.array_equal(s.recount(), s.counts()):
        raise AssertionError("recount() disagrees with the stored counts")
    rep["numpy_bincount_tokens_per_s"] = n / time_best(lambda: np.bincount(s.tokens, minlength=s.vocab_size), 1)
    B, T, steps = 64, 1024, 50
    t = time_best(lambda: [s.random_windows(B, T, 0, i) for i in range(steps)])
    rep["random_windows_tokens_per_s"] = steps * B * (T + 1) / t
    cnt = min(s.n_seq_windows(T), 3200)
    t = time_best(lambda: [s.seq_windows(T, a, min(64, cnt - a)) for a in range(0, cnt, 64)])
    rep["seq_windows_tokens_per_s"] = cnt * (T + 1) / t
    m = min(n, int(ambiguity_tokens))
    sub = Path(work) / "sub.lcshard"
    write_shard(sub, [np.asarray(s.tokens[:m])], vocab_size=s.vocab_size)
    with Stopwatch() as sw:
        res = count_tokens(sub, ambiguity=4, top=0)
    rep["ambiguity_k4_s"] = sw.wall_s
    rep["ambiguity_tokens"] = m
    rep["ambiguity"] = res["ambiguity"]
    return rep


# ------------------------------------------------------------------------------------------------
# tokenizing (bench/bench_tokenize.py)
# ------------------------------------------------------------------------------------------------


def synth_corpus(path: Path, mb: float, seed: int = 0) -> None:
    """A deterministic corpus of about `mb` MB: documents of Zipf-weighted made-up words, blank-line separated."""
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
    """A byte-level BPE of `vocab` ids trained on the corpus's first megabyte, saved to `out`."""
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
    """(wall seconds, tokens) of the plain Python pipeline: read, split on blank lines,
    `encode_batch` (or `encode_batch_fast`) in batches of 1,000 documents, EOS, concatenate, bincount."""
    from tokenizers import Tokenizer

    with Stopwatch() as sw:
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
    if counts.sum() != tokens.size:
        raise AssertionError("bincount lost tokens")
    return sw.wall_s, int(tokens.size)


def lcfast_pipeline(corpus: Path, tok_path: Path, out: Path) -> tuple[float, int, dict]:
    """(wall seconds, tokens, tokenize.json) of `lcfast.tokenize_files` end to end into `out`."""
    from lcfast import tokenize_files

    with Stopwatch() as sw:
        meta = tokenize_files([corpus], tok_path, out, val_fraction=0.01, seed=0)
    return sw.wall_s, meta["tokens"]["total"], meta


def tokenize_comparison(corpus: Path | None, tokenizer: Path | None, mb: float, vocab: int, repeat: int) -> dict:
    """lcfast vs both Python pipelines on the same corpus, best of `repeat` rounds (each round runs
    all three). Without `corpus`, a synthetic one of `mb` MB; without `tokenizer`, a BPE of `vocab`
    trained on it (neither timed)."""
    import platform
    import sys

    with tempfile.TemporaryDirectory(prefix="lcfast-bench-") as tmp:
        tmp = Path(tmp)
        if corpus is None:
            corpus = tmp / "corpus.txt"
            synth_corpus(corpus, mb)
        if tokenizer is None:
            tokenizer = tmp / "tokenizer.json"
            train_tokenizer(corpus, vocab, tokenizer)
        res: dict[str, list[float]] = {"lcfast": [], "python_encode_batch": [], "python_encode_batch_fast": []}
        n_l = n_p = 0
        meta: dict = {}
        for r in range(repeat):
            dt, n_l, meta = lcfast_pipeline(corpus, tokenizer, tmp / f"out{r}")
            res["lcfast"].append(dt)
            dt, n_p = python_pipeline(corpus, tokenizer, fast=False)
            res["python_encode_batch"].append(dt)
            dt, _ = python_pipeline(corpus, tokenizer, fast=True)
            res["python_encode_batch_fast"].append(dt)
        if n_l != n_p:
            print(f"WARNING: token totals differ: lcfast {n_l}, python {n_p}", file=sys.stderr)
        best = {k: min(v) for k, v in res.items()}
        base = min(best["python_encode_batch"], best["python_encode_batch_fast"])
        return {
            "corpus_bytes": corpus.stat().st_size,
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
