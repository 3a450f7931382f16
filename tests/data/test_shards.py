"""TokenShard: layout, numpy-only reader from the docs, validation errors, windows."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from lcfast import TokenShard
from lcfast.errors import DataError, UsageError

DOC = Path(__file__).resolve().parents[2] / "docs" / "shard-format.md"


def _reseal(b: bytearray) -> bytearray:
    """Recompute payload and header checksums after an edit (as a buggy writer would)."""
    from lcfast import _core

    b[96:104] = struct.pack("<Q", _core.xxh3_64(bytes(b[128:])))
    b[120:128] = struct.pack("<Q", _core.xxh3_64(bytes(b[:120])))
    return b


@pytest.fixture()
def train_copy(tiny_shards, tmp_path) -> Path:
    p = tmp_path / "train.lcshard"
    shutil.copyfile(tiny_shards / "train.lcshard", p)
    return p


def test_attributes_and_views(tiny_shards):
    s = TokenShard(tiny_shards / "train.lcshard")
    assert len(s) == s.n_tokens > 0
    assert s.dtype == np.uint16 and s.tokens.dtype == np.uint16
    assert isinstance(s.tokens, np.memmap) and not s.tokens.flags.writeable
    assert s.doc_offsets.dtype == np.uint64 and s.doc_offsets.shape == (s.n_docs + 1,)
    assert s.doc_offsets[0] == 0 and s.doc_offsets[-1] == s.n_tokens
    assert np.all(np.diff(s.doc_offsets.astype(np.int64)) > 0)
    assert s.eos_id is not None and s.eos_id < s.vocab_size
    # every document ends with EOS; no EOS inside a document
    ends = s.doc_offsets[1:].astype(np.int64) - 1
    assert np.all(s.tokens[ends] == s.eos_id)
    assert int((s.tokens == s.eos_id).sum()) == s.n_docs
    c = s.counts()
    assert c.dtype == np.int64 and c.shape == (s.vocab_size,)
    np.testing.assert_array_equal(c, np.bincount(s.tokens, minlength=s.vocab_size))
    np.testing.assert_array_equal(s.recount(), c)
    assert re.fullmatch(r"[0-9a-f]{32}", s.tokenizer_fingerprint)
    assert re.fullmatch(r"[0-9a-f]{16}", s.fingerprint)
    assert s.fingerprint != TokenShard(tiny_shards / "val.lcshard").fingerprint
    np.testing.assert_array_equal(s.document(1), s.tokens[s.doc_offsets[1] : s.doc_offsets[2]])
    with pytest.raises(UsageError):
        s.document(s.n_docs)


def test_numpy_reader_from_docs(tiny_shards):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    ns: dict = {}
    exec(code, ns)  # the reader published in docs/shard-format.md
    for name in ("train.lcshard", "val.lcshard"):
        s = TokenShard(tiny_shards / name)
        tokens, offsets, counts, header = ns["read_lcshard"](str(tiny_shards / name))
        np.testing.assert_array_equal(tokens, s.tokens)
        np.testing.assert_array_equal(offsets, s.doc_offsets)
        np.testing.assert_array_equal(counts, s.counts())
        assert header == {"vocab_size": s.vocab_size, "eos_id": s.eos_id}
    from lcfast import _core

    raw = (tiny_shards / "train.lcshard").read_bytes()
    assert _core.xxh3_64(raw[128:]) == struct.unpack("<Q", raw[96:104])[0]


def _expect_data_error(path: Path, needle: str, verify: bool = True) -> None:
    with pytest.raises(DataError) as ei:
        TokenShard(path, verify=verify)
    msg = str(ei.value)
    assert str(path) in msg and needle in msg, msg
    assert "\n" not in msg


def test_corruptions_are_clean_errors(train_copy):
    good = bytearray(train_copy.read_bytes())
    p = train_copy

    p.write_bytes(b"PK\x03\x04" + bytes(good[4:]))
    _expect_data_error(p, "bad magic")

    b = bytearray(good)
    b[8:12] = struct.pack("<I", 7)
    p.write_bytes(bytes(_reseal(b)))
    _expect_data_error(p, "version 7")

    for cut in (0, 5, 64, 200, len(good) - 3):
        p.write_bytes(bytes(good[:cut]))
        _expect_data_error(p, "truncated")

    b = bytearray(good)
    b[130] ^= 0x01
    p.write_bytes(bytes(b))
    _expect_data_error(p, "checksum mismatch")
    assert TokenShard(p, verify=False).n_tokens > 0  # trusted hot path skips the payload pass

    b = bytearray(good)
    b[20] ^= 0x01  # vocab_size: header checksum
    p.write_bytes(bytes(b))
    _expect_data_error(p, "header checksum")

    b = bytearray(good)
    vocab = struct.unpack("<I", good[20:24])[0]
    b[128 + 2 * 5 : 128 + 2 * 6] = struct.pack("<H", vocab + 3)
    p.write_bytes(bytes(_reseal(b)))
    _expect_data_error(p, f"token id {vocab + 3} at position 5 is out of range")

    p.write_bytes(bytes(good) + b"\0")
    _expect_data_error(p, "trailing bytes")


def test_stored_counts_are_checked_by_count(train_copy):
    from lcfast import count_tokens

    b = bytearray(train_copy.read_bytes())
    counts_off = struct.unpack("<Q", b[56:64])[0]
    # move one count from id 0's slot to id 1's: total unchanged, so only a recount can tell
    c0, c1 = struct.unpack("<QQ", b[counts_off : counts_off + 16])
    assert c0 > 0
    b[counts_off : counts_off + 16] = struct.pack("<QQ", c0 - 1, c1 + 1)
    train_copy.write_bytes(bytes(_reseal(b)))
    TokenShard(train_copy)  # structurally fine
    with pytest.raises(DataError, match="stored counts disagree"):
        count_tokens(train_copy)


def test_missing_and_directory(tmp_path):
    with pytest.raises(UsageError, match="no such shard"):
        TokenShard(tmp_path / "nope.lcshard")
    with pytest.raises(UsageError, match="directory"):
        TokenShard(tmp_path)


@pytest.mark.parametrize("n,vocab", [(1001, 1001), (777, 70000), (2, 5), (1, 5)])
def test_seq_windows_cover_every_label_once_across_ranks(tmp_path, n, vocab):
    from lcfast.data.shards import write_shard

    rng = np.random.default_rng(n)
    cuts = np.sort(rng.choice(np.arange(1, n), size=min(9, n - 1), replace=False)) if n > 1 else []
    docs = np.split(np.arange(n), cuts)  # token id == position: every window locates itself
    s = write_shard(tmp_path / "u.lcshard", docs, vocab_size=vocab)
    assert s.dtype == (np.uint16 if vocab <= 65536 else np.uint32)
    for T in (1, 7, 64, 5000):
        for world in (1, 3):
            seen = np.zeros(n, dtype=np.int64)
            total = 0
            for rank in range(world):
                w = s.n_seq_windows(T, rank, world)
                total += w
                done = 0
                while done < w:  # fetch in uneven pieces
                    cnt = min(5, w - done)
                    win, valid = s.seq_windows(T, done, cnt, rank, world)
                    assert win.dtype == np.int64 and win.shape == (cnt, T + 1)
                    assert valid.dtype == np.int64 and valid.shape == (cnt,)
                    for row, v in zip(win, valid):
                        p0 = row[0]
                        np.testing.assert_array_equal(row[:v], np.arange(p0, p0 + v))
                        assert np.all(row[v:] == 0)
                        seen[p0 + 1 : p0 + v] += 1
                    done += cnt
            assert total == max(0, -(-(n - 1) // T))
            assert seen[0] == 0 and np.all(seen[1:] == 1), (T, world)
    with pytest.raises(UsageError):
        s.seq_windows(7, s.n_seq_windows(7), 1)
    with pytest.raises(UsageError):
        s.n_seq_windows(7, rank=2, world=2)


def test_seq_windows_rank_blocks_are_contiguous(tiny_shards):
    s = TokenShard(tiny_shards / "train.lcshard")
    T = 16
    full, vfull = s.seq_windows(T, 0, s.n_seq_windows(T))
    parts, vparts = [], []
    for r in range(4):
        w, v = s.seq_windows(T, 0, s.n_seq_windows(T, r, 4), r, 4)
        parts.append(w)
        vparts.append(v)
    np.testing.assert_array_equal(np.concatenate(parts), full)
    np.testing.assert_array_equal(np.concatenate(vparts), vfull)
    np.testing.assert_array_equal(full[:, :-1].reshape(-1)[: s.n_tokens - 1][: 10 * T], s.tokens[: 10 * T])


def test_random_windows(tiny_shards):
    s = TokenShard(tiny_shards / "train.lcshard")
    B, T = 8, 32
    a = s.random_windows(B, T, seed=1, step=5)
    assert a.dtype == np.int64 and a.shape == (B, T + 1)
    np.testing.assert_array_equal(a, s.random_windows(B, T, seed=1, step=5))
    assert not np.array_equal(a, s.random_windows(B, T, seed=1, step=6))
    assert not np.array_equal(a, s.random_windows(B, T, seed=2, step=5))
    toks = np.asarray(s.tokens)
    starts = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(toks, T + 1) == a[0], axis=1))
    assert starts.size >= 1
    with pytest.raises(DataError):
        s.random_windows(1, s.n_tokens, 0, 0)
    with pytest.raises(UsageError):
        s.random_windows(-1, 4, 0, 0)
