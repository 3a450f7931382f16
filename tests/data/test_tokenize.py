"""tokenize_files: round trips against the Python tokenizers library, inputs, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcfast import TokenShard, tokenize_files
from lcfast.errors import DataError, UsageError


def _expected(docs, tok_path, seed, val_fraction):
    """Per split, the ids the Python `tokenizers` library gives each document, plus EOS."""
    from tokenizers import Tokenizer

    from lcfast import _core

    tok = Tokenizer.from_file(str(tok_path))
    eos = tok.token_to_id("<|endoftext|>")
    out = {"train": [], "val": []}
    for d in docs:
        if not d.strip():
            continue
        ids = tok.encode(d, add_special_tokens=False).ids + [eos]
        out["val" if _core.is_val(d, seed, val_fraction) else "train"].append(ids)
    return out


def _docs_of(shard: TokenShard) -> list[list[int]]:
    return [shard.document(i).tolist() for i in range(shard.n_docs)]


def test_round_trip_matches_python_tokenizers(tiny_shards, tiny_docs, tiny_bpe_tokenizer):
    want = _expected(tiny_docs, tiny_bpe_tokenizer, seed=0, val_fraction=0.2)
    for split in ("train", "val"):
        s = TokenShard(tiny_shards / f"{split}.lcshard")
        assert _docs_of(s) == want[split]
    assert 40 < len(want["val"]) < 120
    meta = json.loads((tiny_shards / "meta.json").read_text())
    assert meta["documents"] == {"train": len(want["train"]), "val": len(want["val"]), "total": 400, "skipped_empty": 0}
    assert meta["tokens"]["train"] == sum(map(len, want["train"]))
    assert meta["vocab_size"] == TokenShard(tiny_shards / "train.lcshard").vocab_size
    assert meta["dtype"] == "uint16"
    assert meta["tokenizer"]["fast_path"] is True
    from lcfast import _core

    fp = _core.tokenizer_fingerprint(str(tiny_shards / "tokenizer.json"))
    assert meta["tokenizer_fingerprint"] == fp == TokenShard(tiny_shards / "val.lcshard").tokenizer_fingerprint
    assert meta["eos_id"] == TokenShard(tiny_shards / "val.lcshard").eos_id
    for k in ("tokenize_s", "tokens_per_s"):
        assert meta["timing"][k] > 0


def test_fast_path_equals_reference_on_tricky_text(tiny_bpe_tokenizer):
    from tokenizers import Tokenizer

    from lcfast import _core

    enc = _core.Encoder(str(tiny_bpe_tokenizer))
    tok = Tokenizer.from_file(str(tiny_bpe_tokenizer))
    assert enc.fast_path
    texts = [
        "Hello  world\t\tand   spaces   ",
        "it's we'll THEY'RE 'd '' x'sy",
        "1,000 apples, 3.14 pies; 12ab34",
        "\n\n  \u00a0\u3000 mixed\u2028whitespace\r\n",
        "café naïve 日本語 🙂🙂 e\u0301",
        "<|endoftext|> inside text<|endoftext|>",
        "",
        " ",
    ]
    for t in texts:
        py = tok.encode(t, add_special_tokens=False).ids
        assert enc.encode(t) == enc.encode(t, fast=False) == py, repr(t)


def test_inputs_txt_jsonl_parquet_dir_give_identical_shards(tmp_path, tiny_docs, tiny_text_corpus, tiny_bpe_tokenizer,
                                                            tiny_shards):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = tiny_docs[:150]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    pq.write_table(pa.table({"text": docs}), tmp_path / "b.parquet", row_group_size=40)
    (tmp_path / "c.txt").write_text("\n\n\n".join(docs))
    outs = {}
    for name, inp in [("jsonl", tmp_path / "a.jsonl"), ("parquet", tmp_path / "b.parquet"),
                      ("txt", tmp_path / "c.txt")]:
        out = tmp_path / f"out_{name}"
        meta = tokenize_files([inp], tiny_bpe_tokenizer, out, val_fraction=0.3, seed=5)
        assert meta["documents"]["total"] == 150
        assert meta["inputs"][0]["kind"] == name
        outs[name] = out
    for split in ("train.lcshard", "val.lcshard"):
        ref = (outs["txt"] / split).read_bytes()
        assert (outs["jsonl"] / split).read_bytes() == ref
        assert (outs["parquet"] / split).read_bytes() == ref
    want = _expected(docs, tiny_bpe_tokenizer, seed=5, val_fraction=0.3)
    assert _docs_of(TokenShard(outs["txt"] / "val.lcshard")) == want["val"]

    # a directory: files in sorted order (a.jsonl, b.parquet, c.txt) -> 3 copies of each doc
    sub = tmp_path / "dir"
    sub.mkdir()
    for f in ("a.jsonl", "b.parquet", "c.txt"):
        (sub / f).write_bytes((tmp_path / f).read_bytes())
    (sub / "notes.md").write_text("ignored")
    meta = tokenize_files([sub], tiny_bpe_tokenizer, tmp_path / "out_dir", val_fraction=0.3, seed=5)
    assert meta["documents"]["total"] == 450
    assert [Path(i["source"]).name for i in meta["inputs"]] == ["a.jsonl", "b.parquet", "c.txt"]
    t = TokenShard(tmp_path / "out_dir" / "train.lcshard")
    assert _docs_of(t) == want["train"] * 3


def test_determinism_seed_and_threads(tmp_path, tiny_text_corpus, tiny_bpe_tokenizer, tiny_shards):
    out1 = tmp_path / "t1"
    tokenize_files([tiny_text_corpus], tiny_bpe_tokenizer, out1, val_fraction=0.2, seed=0, threads=1, chunk_bytes=999)
    for f in ("train.lcshard", "val.lcshard"):
        assert (out1 / f).read_bytes() == (tiny_shards / f).read_bytes()
    # RAYON_NUM_THREADS in a fresh process (threads=0 follows it)
    out3 = tmp_path / "t3"
    code = (
        "import sys; from lcfast import tokenize_files; "
        "tokenize_files([sys.argv[1]], sys.argv[2], sys.argv[3], val_fraction=0.2, seed=0, chunk_bytes=3000)"
    )
    env = dict(os.environ, RAYON_NUM_THREADS="3")
    subprocess.run([sys.executable, "-c", code, str(tiny_text_corpus), str(tiny_bpe_tokenizer), str(out3)], check=True,
                   env=env)
    assert json.loads((out3 / "meta.json").read_text())["threads"] == 3
    for f in ("train.lcshard", "val.lcshard"):
        assert (out3 / f).read_bytes() == (tiny_shards / f).read_bytes()
    # another seed: another split
    out2 = tmp_path / "t2"
    tokenize_files([tiny_text_corpus], tiny_bpe_tokenizer, out2, val_fraction=0.2, seed=1)
    assert (out2 / "val.lcshard").read_bytes() != (tiny_shards / "val.lcshard").read_bytes()


def test_train_bpe_tokenizer(tmp_path, tiny_text_corpus, tiny_docs):
    from tokenizers import Tokenizer

    out = tmp_path / "o"
    meta = tokenize_files([tiny_text_corpus], "train:300", out, val_fraction=0.1, seed=0)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.get_vocab_size() == 300
    assert meta["tokenizer"]["trained"] is True
    assert meta["eos_id"] == tok.token_to_id("<|endoftext|>")
    assert meta["tokenizer"]["fast_path"] is True
    want = _expected(tiny_docs, out / "tokenizer.json", seed=0, val_fraction=0.1)
    assert _docs_of(TokenShard(out / "train.lcshard")) == want["train"]
    # training is deterministic too
    out2 = tmp_path / "o2"
    tokenize_files([tiny_text_corpus], "train:300", out2, val_fraction=0.1, seed=0)
    assert (out2 / "train.lcshard").read_bytes() == (out / "train.lcshard").read_bytes()


def test_empty_documents_and_eos_option(tmp_path, tiny_bpe_tokenizer):
    p = tmp_path / "x.jsonl"
    p.write_text('{"text": "a b c"}\n{"text": "   "}\n{"text": null}\n{"text": ""}\n\n{"text": "d e"}\n')
    meta = tokenize_files([p], tiny_bpe_tokenizer, tmp_path / "o", val_fraction=0.0)
    assert meta["documents"]["total"] == 2 and meta["documents"]["skipped_empty"] == 3
    assert meta["documents"]["val"] == 0 and meta["warnings"] == []
    assert TokenShard(tmp_path / "o" / "val.lcshard").n_tokens == 0
    # an explicit --eos (here: a plain vocabulary token)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_bpe_tokenizer))
    eos_tok = tok.id_to_token(100)
    meta = tokenize_files([p], tiny_bpe_tokenizer, tmp_path / "o2", val_fraction=0.0, eos=eos_tok)
    s = TokenShard(tmp_path / "o2" / "train.lcshard")
    assert s.eos_id == 100 and s.document(0)[-1] == 100
    with pytest.raises(UsageError, match="--eos"):
        tokenize_files([p], tiny_bpe_tokenizer, tmp_path / "o3", eos="<no such token>")


def test_bad_inputs(tmp_path, tiny_bpe_tokenizer):
    t = tiny_bpe_tokenizer
    with pytest.raises(UsageError, match="no such file"):
        tokenize_files([tmp_path / "missing.txt"], t, tmp_path / "o")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UsageError, match="unsupported file type '.csv'"):
        tokenize_files([tmp_path / "x.csv"], t, tmp_path / "o")
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="no documents found"):
        tokenize_files([tmp_path / "empty.txt"], t, tmp_path / "o")
    assert not (tmp_path / "o" / "train.lcshard").exists()
    # a bad file after a good one: error naming it, nothing half-written left behind
    (tmp_path / "z.jsonl").write_text('{"text": "fine"}\n' * 50 + "{oops\n")
    (tmp_path / "a.txt").write_text("one doc\n\nanother\n")
    with pytest.raises(DataError, match="z.jsonl: line 51 is not valid JSON"):
        tokenize_files([tmp_path / "a.txt", tmp_path / "z.jsonl"], t, tmp_path / "o")
    assert not (tmp_path / "o").exists()  # no temporary, not even the folder made for the outputs
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="bad.parquet: not a readable parquet file"):
        tokenize_files([tmp_path / "bad.parquet"], t, tmp_path / "o")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    with pytest.raises(DataError, match="no column 'text'"):
        tokenize_files([tmp_path / "nocol.parquet"], t, tmp_path / "o")
    with pytest.raises(UsageError, match="val-fraction"):
        tokenize_files([tmp_path / "empty.txt"], t, tmp_path / "o", val_fraction=1.5)
    with pytest.raises(UsageError, match="VOCAB"):
        tokenize_files([tmp_path / "empty.txt"], "train:12", tmp_path / "o")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        tokenize_files([tmp_path / "empty.txt"], tmp_path / "bad.json", tmp_path / "o")


def test_hf_without_datasets_is_a_clear_error(tmp_path, tiny_bpe_tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(UsageError, match="needs the 'datasets' package"):
        tokenize_files(["hf:roneneldan/TinyStories"], tiny_bpe_tokenizer, tmp_path / "o")


def test_memory_is_bounded_by_chunks(tmp_path, tiny_bpe_tokenizer):
    """A corpus much larger than the chunk size streams through (reader thread + bounded queue)."""
    doc = "the dog ran to the park and saw a cat. " * 20
    p = tmp_path / "big.txt"
    with open(p, "w") as f:
        for i in range(3000):
            f.write(f"{i} {doc}\n\n")
    calls = []
    meta = tokenize_files([p], tiny_bpe_tokenizer, tmp_path / "o", chunk_bytes=64 << 10,
                          progress=lambda d, t: calls.append((d, t)))
    assert meta["documents"]["total"] == 3000
    assert len(calls) > 10 and calls[-1][0] == calls[-1][1] == p.stat().st_size
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    s = TokenShard(tmp_path / "o" / "train.lcshard")
    assert np.all(s.tokens[s.doc_offsets[1:].astype(np.int64) - 1] == s.eos_id)
