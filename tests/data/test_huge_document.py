"""One huge document tokenizes in bounded memory (docs/bad-input.md, "Numbers at the edges"): a
document longer than the segment size (lcfast._core.SEGMENT_BYTES, 1 MiB) is read, tokenized and
written in segments cut before a space, and its ids are exactly those of the whole document."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcfast import TokenShard
from lcfast.data.tokenize import tokenize_files

_RSS = """
import resource, sys
from lcfast.data.tokenize import tokenize_files
m = tokenize_files([sys.argv[1]], sys.argv[2], sys.argv[3], val_fraction=0.0)
print(m["documents"]["total"], m["tokens"]["total"], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_rss_kib(src: Path, tok: Path, out: Path) -> tuple[int, int, int]:
    r = subprocess.run([sys.executable, "-c", _RSS, str(src), str(tok), str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    docs, tokens, rss = map(int, r.stdout.split())
    return docs, tokens, rss


def _unit(tiny_docs) -> str:
    """A few hundred words of the fixture corpus on one line (no blank lines, single spaces)."""
    return " ".join(" ".join(d.split()) for d in tiny_docs[:20])


def test_huge_single_line_document_in_bounded_memory(tmp_path, tiny_docs, tiny_bpe_tokenizer):
    """A 48 MiB single-line document: peak RSS grows by less than the document itself (it used to
    grow by ~4× the document: 455 MB for 100 MB, and abort under a memory limit), and the ids are
    the whole document's: tokens(u) then tokens(" " + u) for every further copy."""
    from tokenizers import Tokenizer

    unit = _unit(tiny_docs)
    copies = (48 << 20) // (len(unit) + 1)
    big = tmp_path / "big.txt"
    with open(big, "w", encoding="utf-8") as f:
        f.write(unit)
        for _ in range(copies - 1):
            f.write(" ")
            f.write(unit)
        f.write("\n")
    small = tmp_path / "small.txt"
    small.write_text(unit + "\n")
    _, _, base = _peak_rss_kib(small, tiny_bpe_tokenizer, tmp_path / "o_small")
    docs, tokens, peak = _peak_rss_kib(big, tiny_bpe_tokenizer, tmp_path / "o_big")
    size_kib = big.stat().st_size // 1024
    assert docs == 1
    assert peak - base < size_kib, f"peak RSS grew by {peak - base} KiB for a {size_kib} KiB document"

    tok = Tokenizer.from_file(str(tiny_bpe_tokenizer))
    first, rest = tok.encode(unit).ids, tok.encode(" " + unit).ids
    eos = tok.token_to_id("<|endoftext|>")
    shard = TokenShard(tmp_path / "o_big" / "train.lcshard")
    assert shard.n_docs == 1 and shard.n_tokens == tokens == len(first) + (copies - 1) * len(rest) + 1
    ids = np.asarray(shard.tokens)
    assert np.array_equal(ids[: len(first)], first)
    body = ids[len(first):-1].reshape(copies - 1, len(rest))
    assert (body == np.asarray(rest)).all() and ids[-1] == eos


def test_segments_give_the_ids_of_the_whole_document(tmp_path, tiny_bpe_tokenizer):
    """Small segments (4 KiB) over varied text — runs of spaces, newlines inside the document, tabs,
    non-ASCII, the EOS text itself — compared with `tokenizers` encoding the whole document; the
    same through .txt (read in pieces) and .jsonl (cut after parsing)."""
    from tokenizers import Tokenizer

    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "été", "日本", "🙂", "9,5", "it's", "<|endoftext|>", "x!?"]
    seps = [" ", " ", " ", "  ", "\n", " \n ", "\t", "   "]
    doc = "".join(rng.choice(words) + rng.choice(seps) for _ in range(150000)).strip()
    doc = "\n".join(line for line in doc.split("\n") if line.strip())  # no blank line: one document
    assert len(doc.encode()) > 100 * 4096
    tok = Tokenizer.from_file(str(tiny_bpe_tokenizer))
    want = tok.encode(doc).ids + [tok.token_to_id("<|endoftext|>")]
    (tmp_path / "d.txt").write_text("short first doc\n\n" + doc + "\n\nshort last doc\n", encoding="utf-8")
    lines = (json.dumps({"text": t}) for t in ("short first doc", doc, "short last doc"))
    (tmp_path / "d.jsonl").write_text("\n".join(lines), encoding="utf-8")
    for src in ("d.txt", "d.jsonl"):
        out = tmp_path / f"o_{src}"
        meta = tokenize_files([tmp_path / src], tiny_bpe_tokenizer, out, val_fraction=0.0, segment_bytes=4096)
        assert meta["documents"]["total"] == 3
        shard = TokenShard(out / "train.lcshard")
        offs = np.asarray(shard.doc_offsets)
        assert np.array_equal(np.asarray(shard.tokens)[offs[1]:offs[2]], want), src


def test_no_space_for_a_megabyte_still_round_trips(tmp_path, tiny_bpe_tokenizer):
    """A 3 MiB document without a single space is cut at character boundaries: ids next to a cut
    may differ from the whole's, but it stays one document and decodes to the same text."""
    from tokenizers import Tokenizer

    doc = ("abcé日" * 300000)[: 3 << 20]
    (tmp_path / "n.txt").write_text(doc + "\n", encoding="utf-8")
    tokenize_files([tmp_path / "n.txt"], tiny_bpe_tokenizer, tmp_path / "o", val_fraction=0.0)
    shard = TokenShard(tmp_path / "o" / "train.lcshard")
    assert shard.n_docs == 1
    tok = Tokenizer.from_file(str(tiny_bpe_tokenizer))
    assert tok.decode(np.asarray(shard.tokens)[:-1].tolist(), skip_special_tokens=False) == doc


@pytest.mark.parametrize("cap", [0, -1])
def test_segment_bytes_is_checked(tmp_path, tiny_bpe_tokenizer, cap):
    from lcfast.errors import UsageError

    (tmp_path / "a.txt").write_text("a b\n")
    with pytest.raises(UsageError, match="segment_bytes"):
        tokenize_files([tmp_path / "a.txt"], tiny_bpe_tokenizer, tmp_path / "o", segment_bytes=cap)
