"""`lcfast tokenize` / `lcfast count`: success paths and every bad input (exit code + one line)."""

from __future__ import annotations

import json
import os
import shutil
import sys

from helpers import console, run_main


def assert_error(argv, code, *needles):
    got, out, err = run_main(argv)
    lines = [l for l in err.splitlines() if l.strip()]
    assert got == code, (got, err)
    assert len(lines) == 1, err
    prefix = "lcfast: usage error: " if code == 2 else "lcfast: error: "
    assert lines[0].startswith(prefix), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert "Traceback" not in err


def test_tokenize_and_count_happy_path(tmp_path, tiny_text_corpus, tiny_bpe_tokenizer):
    out = tmp_path / "data"
    code, stdout, err = run_main(
        ["tokenize", str(tiny_text_corpus), "--tokenizer", str(tiny_bpe_tokenizer), "--out", str(out),
         "--val-fraction", "0.2", "--seed", "0", "--json", str(tmp_path / "tok.json")])
    assert code == 0, err
    for f in ("train.lcshard", "val.lcshard", "tokenizer.json", "meta.json"):
        assert (out / f).is_file()
    assert json.loads((tmp_path / "tok.json").read_text()) == json.loads((out / "meta.json").read_text())
    assert "train" in stdout and "val" in stdout

    code, stdout, err = run_main(["count", str(out / "train.lcshard"), "--ambiguity", "3", "--top", "5",
                             "--json", str(tmp_path / "count.json")])
    assert code == 0, err
    res = json.loads((tmp_path / "count.json").read_text())
    assert res["n_tokens"] > 0 and len(res["top_tokens"]) == 5 and len(res["ambiguity"]) == 3
    assert set(res["classes_ge"]) == {"1", "10", "100"}
    assert "context ambiguity" in stdout and "Gini" in stdout and "entropy" in stdout


def test_tokenize_train_vocab_via_subprocess(tmp_path, tiny_text_corpus):
    out = tmp_path / "d"
    r = console(["tokenize", tiny_text_corpus, "-t", "train:320", "-o", out], env=os.environ)
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["tokenizer"]["trained"] and meta["vocab_size"] == 320
    r = console(["count", out / "nope.lcshard"], env=os.environ)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nope.lcshard" in r.stderr


def test_tokenize_bad_inputs(tmp_path, tiny_bpe_tokenizer, tiny_text_corpus, monkeypatch):
    tok = str(tiny_bpe_tokenizer)
    good = str(tiny_text_corpus)
    o = str(tmp_path / "o")
    assert_error(["tokenize", str(tmp_path / "missing.txt"), "-t", tok, "-o", o], 2, "missing.txt", "no such file")
    (tmp_path / "x.csv").write_text("a\n")
    assert_error(["tokenize", str(tmp_path / "x.csv"), "-t", tok, "-o", o], 2, "x.csv", "unsupported file type")
    (tmp_path / "empty.txt").write_text("\n \n")
    assert_error(["tokenize", str(tmp_path / "empty.txt"), "-t", tok, "-o", o], 1, "empty.txt", "no documents")
    (tmp_path / "emptydir").mkdir()
    assert_error(["tokenize", str(tmp_path / "emptydir"), "-t", tok, "-o", o], 1, "emptydir", "no .txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": 1}\n')
    assert_error(["tokenize", str(tmp_path / "bad.jsonl"), "-t", tok, "-o", o], 1, "bad.jsonl: line 2", "text")
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"\n')
    assert_error(["tokenize", str(tmp_path / "broken.jsonl"), "-t", tok, "-o", o], 1, "broken.jsonl: line 1",
                 "not valid JSON")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    assert_error(["tokenize", str(tmp_path / "latin1.txt"), "-t", tok, "-o", o], 1, "latin1.txt: line 1", "UTF-8")
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    assert_error(["tokenize", str(tmp_path / "bad.parquet"), "-t", tok, "-o", o], 1, "bad.parquet", "parquet")
    assert_error(["tokenize", good, "-t", "train:abc", "-o", o], 2, "--tokenizer", "train:VOCAB")
    assert_error(["tokenize", good, "-t", "train:100", "-o", o], 2, "--tokenizer", "VOCAB must be between")
    assert_error(["tokenize", good, "-t", str(tmp_path / "nope.json"), "-o", o], 2, "--tokenizer",
                 "no such tokenizer file")
    (tmp_path / "garbage.json").write_text("{not json")
    assert_error(["tokenize", good, "-t", str(tmp_path / "garbage.json"), "-o", o], 1, "garbage.json",
                 "not a valid tokenizer.json")
    assert_error(["tokenize", good, "-t", tok, "-o", o, "--val-fraction", "2"], 2, "--val-fraction")
    assert_error(["tokenize", good, "-t", tok, "-o", o, "--seed", "-3"], 2, "--seed")
    assert_error(["tokenize", good, "-t", tok, "-o", o, "--eos", "<nope>"], 2, "--eos", "<nope>")
    (tmp_path / "afile").write_text("x")
    assert_error(["tokenize", good, "-t", tok, "-o", str(tmp_path / "afile")], 2, "--out", "not a directory")
    assert_error(["tokenize", "hf:", "-t", tok, "-o", o], 2, "hf:NAME")
    monkeypatch.setitem(sys.modules, "datasets", None)
    assert_error(["tokenize", "hf:roneneldan/TinyStories", "-t", tok, "-o", o], 2, "datasets")
    assert_error(["tokenize", good, "-o", o], 2, "--tokenizer")  # missing required option (click)


def test_count_bad_inputs(tmp_path, tiny_shards):
    train = tmp_path / "train.lcshard"
    shutil.copyfile(tiny_shards / "train.lcshard", train)
    good = bytes(train.read_bytes())
    assert_error(["count", str(tmp_path / "nope.lcshard")], 2, "nope.lcshard", "no such shard")
    train.write_bytes(b"hello" * 40)
    assert_error(["count", str(train)], 1, str(train), "bad magic")
    train.write_bytes(good[:1000])
    assert_error(["count", str(train)], 1, str(train), "truncated")
    b = bytearray(good)
    b[300] ^= 0xFF
    train.write_bytes(bytes(b))
    assert_error(["count", str(train)], 1, str(train), "checksum mismatch")
    train.write_bytes(good)
    assert_error(["count", str(train), "--ambiguity", "65"], 2, "--ambiguity")
    assert_error(["count", str(train), "--ambiguity", "2", "--memory-mb", "0"], 2, "--memory-mb")
    assert_error(["count", str(train), "--json", str(tmp_path / "no" / "dir" / "x.json")], 2, "--json",
                 "does not exist")
    (tmp_path / "empty_dir").mkdir()
    assert_error(["count", str(tmp_path / "empty_dir")], 2, "empty_dir", "no .lcshard")
    assert_error(["count"], 2)  # missing argument (click)


def test_corpus_controlled_refuses_shares_past_one_half(tmp_path):
    """The controlled corpus's two shares together must leave room for their cues: one line, exit 2,
    nothing written (the console script)."""
    out = tmp_path / "cc"
    r = console(["corpus", "controlled", "--out", out, "--deterministic", "0.4", "--ambiguous", "0.4",
                 "--tokens", "1000"])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and lines == ["lcfast: usage error: --deterministic 0.4 + --ambiguous 0.4: at most 0.5 "
                                           "together (each target follows its cue)"], r.stderr
    assert not out.exists()
