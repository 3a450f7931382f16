"""Shard-parser fuzzing, kept in CI: the inputs the libFuzzer campaign (fuzz/, see fuzz/README.md) kept
or found, replayed through the Python reader (Rust `Shard::open` on a real file: the memory-map
path), plus a short hypothesis campaign of mutated valid shards.

Input format of fuzz/regressions/* (the fuzz target's): byte 0 picks a mode, the rest is the file;
mode 1 recomputes the header checksum, mode 2 the payload checksum too (so that the mutated
fields reach the structural checks instead of failing the checksum)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcfast import _core
from lcfast.data.shards import TokenShard, write_shard
from lcfast.errors import DataError, UsageError

REG = Path(__file__).resolve().parents[2] / "fuzz" / "regressions"
HEADER = 128


def seal(b: bytearray, payload: bool) -> bytes:
    if len(b) >= HEADER:
        if payload:
            b[96:104] = int(_core.xxh3_64(bytes(b[HEADER:]))).to_bytes(8, "little")
        b[120:128] = int(_core.xxh3_64(bytes(b[:120]))).to_bytes(8, "little")
    return bytes(b)


def decode_input(data: bytes) -> bytes:
    mode, body = data[0] % 3, bytearray(data[1:])
    return seal(body, mode == 2) if mode else bytes(body)


def check_file(path: Path) -> TokenShard | None:
    """Open `path`: a shard, or a one-line DataError naming the file — never anything else."""
    try:
        s = TokenShard(path)
    except (DataError, UsageError) as e:
        msg = str(e)
        assert msg.startswith(str(path)) and "\n" not in msg, msg
        return None
    # accepted: every access must work and agree with the header
    toks = np.asarray(s.tokens)
    assert toks.shape == (s.n_tokens,) and (toks < s.vocab_size).all()
    offs = np.asarray(s.doc_offsets)
    assert offs[0] == 0 and offs[-1] == s.n_tokens and (np.diff(offs.astype(np.int64)) >= 0).all()
    assert int(s.counts().sum()) == s.n_tokens
    for T in (1, 4):
        for world in (1, 2, 3):
            covered = np.zeros(s.n_tokens, dtype=np.int64)
            for rank in range(world):
                n = s.n_seq_windows(T, rank, world)
                if n:
                    w, valid = s.seq_windows(T, 0, n, rank, world)
                    assert (valid >= 2).all() and (valid <= T + 1).all()
            total = s.n_seq_windows(T)
            if total:
                w, valid = s.seq_windows(T, 0, total)
                for k, v in enumerate(valid):
                    covered[k * T + 1 : k * T + v] += 1
                    assert (w[k, :v] == toks[k * T : k * T + v]).all()
            if s.n_tokens >= 2:
                assert (covered[1:] == 1).all()
    return s


REG_FILES = sorted(p for p in REG.glob("*") if p.is_file() and not p.name.startswith(".") and p.suffix != ".md") \
    if REG.is_dir() else []


@pytest.mark.parametrize("case", REG_FILES, ids=[p.name for p in REG_FILES])
def test_fuzz_regression(case, tmp_path):
    f = tmp_path / "case.lcshard"
    f.write_bytes(decode_input(case.read_bytes()))
    check_file(f)


def test_regressions_are_present():
    assert len(REG_FILES) >= 5, "fuzz/regressions holds the kept inputs of the campaign"


# -- a short structure-aware campaign in CI (the long one is fuzz/run.sh) -------------------------------
@pytest.fixture(scope="module")
def valid_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    out = []
    for i, (docs, vocab) in enumerate([([rng.integers(0, 40, 30), rng.integers(0, 40, 5)], 40),
                                       ([[1, 2, 3], [], [0]], 4), ([], 3)]):
        out.append(bytes((write_shard(d / f"v{i}.lcshard", docs, vocab).path).read_bytes()))
    return out


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 2), mode=st.integers(0, 2),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10**6)), extra=st.binary(max_size=16))
def test_mutated_shards_never_crash(valid_shards, tmp_path, which, mode, edits, cut, extra):
    b = bytearray(valid_shards[which])
    for pos, val in edits:
        b[pos % len(b)] = val
    if cut is not None:
        b = b[: cut % (len(b) + 1)]
    b += extra
    f = tmp_path / "m.lcshard"
    f.write_bytes(decode_input(bytes([mode]) + bytes(b)))
    check_file(f)
