"""Per-class context entropy (brute force, the Rust aggregate), the nearest-mean CDNV, and the join
of the per-class table: every class once, counts equal the shard's."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
import torch

from lcfast.metrics.per_class import context_entropy, entropy_column, label_counts, per_class_frame
from lcfast.metrics.per_token import nearest_class


def brute(s: list[int], K: int, V: int):
    """h_k(c) straight from the definition: a dict of contexts per order."""
    h = np.full((K, V), np.nan)
    for k in range(1, K + 1):
        nxt: dict[tuple, Counter] = defaultdict(Counter)
        for t in range(k, len(s)):
            nxt[tuple(s[t - k:t])][s[t]] += 1
        H = {}
        for ctx, c in nxt.items():
            n = sum(c.values())
            H[ctx] = -sum(m / n * math.log2(m / n) for m in c.values())
        per: dict[int, list[float]] = defaultdict(list)
        for t in range(k, len(s)):
            per[s[t]].append(H[tuple(s[t - k:t])])
        for c, v in per.items():
            h[k - 1, c] = sum(v) / len(v)
    return h


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_context_entropy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    V = 7
    s = rng.integers(0, V, size=300).tolist()
    s[100:140] = [1, 2, 3, 4] * 10  # repeated phrases: deterministic contexts
    h, npos = context_entropy(np.array(s), 4, V)
    ref = brute(s, 4, V)
    np.testing.assert_allclose(h, ref, rtol=0, atol=1e-12, equal_nan=True)
    for k in range(1, 5):
        assert npos[k - 1].sum() == len(s) - k
        np.testing.assert_array_equal(npos[k - 1], np.bincount(s[k:], minlength=V))
    np.testing.assert_array_equal(label_counts(s, V), npos[0])


def test_hand_example():
    # after 0 always 1 (deterministic); after 2 the next is 0 or 3 evenly (1 bit)
    s = np.array([0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 2, 0])
    h, _ = context_entropy(s, 1, 4)
    assert h[0, 1] == 0.0
    # 3 follows only context 2 (1 bit: 2 → {0, 3} at 2/2... counted below); 0 follows 2 and 3
    n2 = Counter(int(b) for a, b in zip(s[:-1], s[1:]) if a == 2)
    H2 = -sum(m / sum(n2.values()) * math.log2(m / sum(n2.values())) for m in n2.values())
    assert h[0, 3] == pytest.approx(H2)
    assert np.isnan(context_entropy(np.array([5]), 2, 6)[0]).all()


def test_weighted_mean_is_the_rust_aggregate(tmp_path):
    """Σ_c n_k(c) h_k(c) / Σ n_k(c) is `lcfast count --ambiguity`'s H(next | context) (Rust, hashed)."""
    import lcfast
    from lcfast.data.shards import write_shard

    rng = np.random.default_rng(5)
    V = 50
    z = rng.zipf(1.4, size=5000) % V  # Zipfian tokens: many repeated, some ambiguous contexts
    shard = write_shard(tmp_path / "a.lcshard", [z], V)
    K = 3
    r = lcfast.count_tokens(shard, ambiguity=K)
    h, npos = context_entropy(np.asarray(shard.tokens), K, V)
    for k in range(1, K + 1):
        row = r["ambiguity"][k - 1]
        ok = npos[k - 1] > 0
        assert int(npos[k - 1].sum()) == row["positions"]
        w = float((npos[k - 1][ok] * h[k - 1][ok]).sum() / npos[k - 1].sum())
        assert w == pytest.approx(row["cond_entropy_bits"], rel=1e-9, abs=1e-12)


def test_nearest_class_brute_force():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(9, 4, generator=g, dtype=torch.float64)
    var = torch.rand(9, generator=g, dtype=torch.float64)
    M[5] = M[2]  # a coincident pair: NaN CDNV, never inf
    for p in (1.0, 2.0):
        pos, cd = nearest_class(M, var, p, 1e-12, block=4)
        D = torch.cdist(M, M) ** 2
        D.fill_diagonal_(float("inf"))
        ref = D.argmin(1)
        assert torch.equal(pos[[0, 1, 3, 4, 6, 7, 8]], ref[[0, 1, 3, 4, 6, 7, 8]])
        for c in (0, 1, 3, 4, 6, 7, 8):
            j = int(ref[c])
            assert float(cd[c]) == pytest.approx(float((var[c] + var[j]) / (2 * D[c, j] ** p)), rel=1e-9)
        assert {int(pos[2]), int(pos[5])} == {5, 2} and math.isnan(cd[2]) and math.isnan(cd[5])
    pos, cd = nearest_class(M[:1], var[:1], 1.0, 0.0)
    assert int(pos[0]) == -1 and math.isnan(cd[0])


def test_join_every_class_once():
    V = 12
    s = np.array([0, 3, 3, 4, 3, 5, 9, 3, 4, 11, 0, 3])
    h, _ = context_entropy(s, 2, V)
    sc = label_counts(s, V)
    # the measurement kept 3, 4 and 7 (7: counted elsewhere, not a label of this shard)
    pt = pd.DataFrame({"id": [3, 4, 7], "token": ["c", "d", "h"], "n": [4, 2, 1], "norm": [1.0, 2.0, 3.0],
                       "var": [0.5, 1.0, 2.0], "nearest": [4, 3, 4], "cdnv_nearest": [0.1, 0.2, 0.3],
                       "dual_cos": [0.9, 0.8, 0.7], "nc4_hits": [1, 0, 0], "nc4_total": [2, 1, 0],
                       "nc4_hit_rate": [0.5, 0.0, np.nan]})
    df = per_class_frame(pt, h, sc, decode=lambda i: f"<{i}>")
    assert df["id"].is_unique and list(df["id"]) == sorted(set(np.flatnonzero(sc)) | {3, 4, 7})
    assert int(df["shard_count"].sum()) == len(s) - 1  # every label position once
    assert list(df.loc[df["kept"], "id"]) == [3, 4, 7] and int(df["n"].sum()) == 7
    tr_b = (1 + 4 + 9) / 3
    assert df.set_index("id").loc[4, "var_rel"] == pytest.approx(1.0 / tr_b)
    assert df.set_index("id").loc[5, "token"] == "<5>" and math.isnan(df.set_index("id").loc[5, "var"])
    assert list(df.columns[5:7]) == [entropy_column(1), entropy_column(2)]
    np.testing.assert_array_equal(df[entropy_column(1)].to_numpy(), h[0, df["id"].to_numpy()])
    with pytest.raises(ValueError, match="twice"):
        per_class_frame(pd.concat([pt, pt.iloc[:1]]), h, sc)
