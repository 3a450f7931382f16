"""count_tokens: frequency statistics vs numpy, ambiguity vs a brute-force count."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from lcfast import TokenShard, count_tokens
from lcfast.errors import DataError, UsageError


def _gini(x: np.ndarray) -> float:
    x = np.sort(x.astype(np.float64))
    n = x.size
    if x.sum() == 0:
        return 0.0
    # mean absolute difference / (2 * mean)
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * n * n * x.mean()))


def _brute_ambiguity(streams, K):
    rows = []
    for k in range(1, K + 1):
        nexts = defaultdict(Counter)
        for s in streams:
            s = [int(t) for t in s]
            for t in range(k, len(s)):
                nexts[tuple(s[t - k : t])][s[t]] += 1
        pos = sum(sum(c.values()) for c in nexts.values())
        amb = sum(sum(c.values()) for c in nexts.values() if len(c) > 1)
        h = 0.0
        for c in nexts.values():
            n = sum(c.values())
            h -= sum(v * math.log2(v / n) for v in c.values())
        rows.append({"k": k, "positions": pos, "contexts": len(nexts), "ambiguous_positions": amb,
                     "ambiguous_contexts": sum(1 for c in nexts.values() if len(c) > 1),
                     "cond_entropy_bits": h / pos if pos else 0.0})
    return rows


def test_frequency_statistics_match_numpy(tiny_shards):
    res = count_tokens(tiny_shards / "train.lcshard", top=5)
    s = TokenShard(tiny_shards / "train.lcshard")
    c = np.bincount(np.asarray(s.tokens), minlength=s.vocab_size)
    assert res["n_tokens"] == s.n_tokens == c.sum()
    assert res["n_docs"] == s.n_docs
    assert res["classes_seen"] == int((c > 0).sum())
    assert res["classes_ge"] == {str(k): int((c >= k).sum()) for k in (1, 10, 100)}
    p = c[c > 0] / c.sum()
    assert res["entropy_bits"] == pytest.approx(float(-(p * np.log2(p)).sum()), rel=1e-12)
    assert res["gini"] == pytest.approx(_gini(c), rel=1e-9)
    assert res["gini_seen"] == pytest.approx(_gini(c[c > 0]), rel=1e-9)
    assert res["max_count"] == c.max()
    order = sorted(range(len(c)), key=lambda i: (-c[i], i))[:5]
    assert [t["id"] for t in res["top_tokens"]] == order
    assert [t["count"] for t in res["top_tokens"]] == [int(c[i]) for i in order]
    # decoded with the tokenizer.json beside the shard
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_shards / "tokenizer.json"))
    assert [t["token"] for t in res["top_tokens"]] == [tok.decode([i], skip_special_tokens=False) for i in order]
    assert res["ambiguity"] == []


def test_several_shards_and_directories(tiny_shards):
    both = count_tokens([tiny_shards / "train.lcshard", tiny_shards / "val.lcshard"], top=3)
    via_dir = count_tokens(tiny_shards, top=3)
    assert both["n_tokens"] == via_dir["n_tokens"] == (
        TokenShard(tiny_shards / "train.lcshard").n_tokens + TokenShard(tiny_shards / "val.lcshard").n_tokens
    )
    assert both["classes_ge"] == via_dir["classes_ge"]


def test_ambiguity_matches_brute_force(tiny_shards):
    shards = [TokenShard(tiny_shards / "val.lcshard"), TokenShard(tiny_shards / "train.lcshard")]
    want = _brute_ambiguity([shards[0].tokens], 4)
    res = count_tokens(shards[0], ambiguity=4, top=0)
    assert len(res["ambiguity"]) == 4
    for got, exp in zip(res["ambiguity"], want):
        for key in ("k", "positions", "contexts", "ambiguous_positions", "ambiguous_contexts"):
            assert got[key] == exp[key], key
        assert got["cond_entropy_bits"] == pytest.approx(exp["cond_entropy_bits"], abs=1e-9)
        assert got["ambiguous_share"] == pytest.approx(exp["ambiguous_positions"] / exp["positions"])
    # shards are separate streams; a tiny memory budget (many partitions) gives the same numbers
    res2 = count_tokens(shards, ambiguity=3, top=0, memory_bytes=1)
    want2 = _brute_ambiguity([s.tokens for s in shards], 3)
    assert res2["ambiguity_info"]["partitions"] > 2
    for got, exp in zip(res2["ambiguity"], want2):
        assert (got["positions"], got["contexts"], got["ambiguous_positions"]) == (
            exp["positions"], exp["contexts"], exp["ambiguous_positions"])
        assert got["cond_entropy_bits"] == pytest.approx(exp["cond_entropy_bits"], abs=1e-9)


def test_ambiguity_hand_example(tmp_path):
    from lcfast.data.shards import write_shard

    # a b a c a b: context (a) is followed by b, c, b -> 3 of 5 positions ambiguous
    write_shard(tmp_path / "h.lcshard", [[0, 1, 0, 2, 0, 1]], vocab_size=3)
    r = count_tokens(tmp_path / "h.lcshard", ambiguity=2)["ambiguity"]
    assert r[0]["ambiguous_share"] == pytest.approx(0.6)
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3)) * 3 / 5
    assert r[0]["cond_entropy_bits"] == pytest.approx(h)
    assert r[1]["ambiguous_share"] == 0 and r[1]["cond_entropy_bits"] == 0


def test_bad_arguments(tiny_shards, tmp_path):
    from lcfast.data.shards import write_shard

    with pytest.raises(UsageError, match="--ambiguity"):
        count_tokens(tiny_shards / "val.lcshard", ambiguity=1000)
    with pytest.raises(UsageError, match="--ambiguity"):
        count_tokens(tiny_shards / "val.lcshard", ambiguity=-1)
    with pytest.raises(UsageError, match="no such shard"):
        count_tokens(tmp_path / "nope.lcshard")
    write_shard(tmp_path / "other.lcshard", [[1, 2, 3]], vocab_size=7)
    with pytest.raises(DataError, match="vocab_size 7 differs"):
        count_tokens([tiny_shards / "val.lcshard", tmp_path / "other.lcshard"])
    v = TokenShard(tiny_shards / "val.lcshard").vocab_size
    write_shard(tmp_path / "fp.lcshard", [[1, 2, 3]], vocab_size=v, tokenizer_fingerprint="ab" * 16)
    with pytest.raises(DataError, match="different tokenizer"):
        count_tokens([tiny_shards / "val.lcshard", tmp_path / "fp.lcshard"])
