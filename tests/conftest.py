"""Shared fixtures: one intra-op thread (`one_thread`, per module), a tiny text corpus, a tiny
trained byte-level BPE tokenizer and the token shards made from them (session-scoped; well under a
second each). Plain helper functions: tests/helpers.py."""

from __future__ import annotations

import os

# Triton reads TRITON_INTERPRET when it is first imported: set it before any test module imports
# triton, so the order in which pytest collects the tests never matters (see tests/kernels/conftest.py).
if os.environ.get("LCFAST_TEST_DEVICE", "cpu").strip().lower() in ("", "cpu"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path

import pytest

import helpers


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a whole module, its module fixtures included (helpers.one_thread says
    why). A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    with helpers.one_thread():
        yield


@pytest.fixture(scope="session")
def tiny_docs() -> list[str]:
    """400 small documents (list of str)."""
    return helpers.make_docs(400, seed=0)


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
