"""Shared, fast, generic fixtures: a tiny text corpus, a tiny trained byte-level BPE tokenizer
and the token shards made from them (session-scoped; well under a second each)."""

from __future__ import annotations

import os
import random

# Triton reads TRITON_INTERPRET when it is first imported: set it before any test module imports
# triton, so the order in which pytest collects the tests never matters (see tests/kernels/conftest.py).
if os.environ.get("LCFAST_TEST_DEVICE", "cpu").strip().lower() in ("", "cpu"):
    os.environ.setdefault("TRITON_INTERPRET", "1")
from pathlib import Path

import pytest

_WORDS = (
    "the a little big happy sad dog cat bird tree ball park house friend mom dad sun day went "
    "said was very fun toy red blue girl boy loved wanted found under over played jumped ran saw "
    "with and to in on it is they we you he she"
).split()
_NAMES = ["Lily", "Tom", "Max", "Sue", "Ben", "Mia", "Zoë", "José"]
_ODD = ["it's", "they're", "we'll", "3", "42", "1,000", "café", "naïve", "🙂", "—", "“hi”", "  ", "\t", "日本"]


def make_docs(n: int, seed: int = 0) -> list[str]:
    """`n` small story-like documents (some multi-line, some with unicode, digits, apostrophes).

    No document contains a blank line, so joining them with blank lines gives a .txt corpus with
    the same documents.
    """
    r = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = []
        for _ in range(r.randint(1, 3)):
            sents = []
            for _ in range(r.randint(1, 4)):
                ws = [r.choice(_WORDS) for _ in range(r.randint(2, 9))]
                if r.random() < 0.3:
                    ws.insert(r.randint(0, len(ws)), r.choice(_ODD))
                sents.append(r.choice(_NAMES) + " " + " ".join(ws) + r.choice([".", "!", "?", ","]))
            lines.append(" ".join(sents))
        docs.append("\n".join(lines))
    return docs


@pytest.fixture(scope="session")
def tiny_docs() -> list[str]:
    """400 small documents (list of str)."""
    return make_docs(400, seed=0)


@pytest.fixture(scope="session")
def tiny_text_corpus(tmp_path_factory, tiny_docs) -> Path:
    """A .txt file holding `tiny_docs`, separated by blank lines."""
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text("\n\n".join(tiny_docs) + "\n", encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def tiny_bpe_tokenizer(tmp_path_factory, tiny_docs) -> Path:
    """A byte-level BPE tokenizer.json (vocab ≤ 400, `<|endoftext|>` special) trained on tiny_docs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tiny_docs, trainer=trainer)
    p = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(p))
    return p


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory, tiny_text_corpus, tiny_bpe_tokenizer) -> Path:
    """Folder with train.lcshard / val.lcshard / tokenizer.json / meta.json of the tiny corpus
    (val_fraction 0.2, seed 0)."""
    from lcfast.data.tokenize import tokenize_files

    out = tmp_path_factory.mktemp("shards")
    tokenize_files([tiny_text_corpus], tiny_bpe_tokenizer, out, val_fraction=0.2, seed=0)
    return out
