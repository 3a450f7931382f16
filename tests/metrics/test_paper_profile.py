"""profile="paper": the paper's columns against a brute-force float64 implementation of the paper's
definitions (rhubarbwu/linguistic-collapse analyze.py over rhubarbwu/neural-collapse; see
docs/metrics.md), written here independently with plain loops and full matrices on tiny sizes.

The data are imbalanced on purpose: some classes never occur in training (their mean sits at the
origin and stays an NC4 candidate), some occur once or twice (below min_count: dropped from every
statistic but still NC4 candidates at their own means), and a non-kept class sits right next to a
kept one so that the paper's NC4 (nearest of all C means) differs from the canonical one (nearest
kept mean).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lcfast.metrics.embeddings import measure_embeddings
from lcfast.metrics.measure import PAPER_KEYS, measure_stats
from lcfast.metrics.uncertainty import result_keys
from lcfast.stats.classstats import ClassStats
from lcfast.stats.ncc import NCCStats

F64 = torch.float64


# ---------------------------------------------------------------------------------------------
# The reference: the paper's definitions, by brute force
# ---------------------------------------------------------------------------------------------


def _mean(xs):
    return sum(xs) / len(xs)


def _var_pop(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / len(xs)


def _var_sample(xs):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _etf_distance(A):
    """‖A/‖A‖_F − (I − 11ᵀ/K)/√(K−1)‖_F for a K×K matrix (the paper's structure error)."""
    K = A.shape[0]
    E = (np.eye(K) - np.full((K, K), 1.0 / K)) / math.sqrt(K - 1)
    return float(np.linalg.norm(A / np.linalg.norm(A) - E))


def paper_reference(H, Y, W, H_val, Y_val, n_classes, min_count, b=None):
    """Every paper column from raw features, the paper's way: class means over all training
    samples (0 for unseen classes), two-pass variances, statistics over the classes with at least
    min_count samples, NC4 over all C means at the validation positions whose label is kept."""
    H, W, H_val = (np.asarray(x, dtype=np.float64) for x in (H, W, H_val))
    Y, Y_val = np.asarray(Y), np.asarray(Y_val)
    C, d = n_classes, H.shape[1]
    counts = np.zeros(C, dtype=np.int64)
    sums = np.zeros((C, d))
    for h, y in zip(H, Y):
        counts[y] += 1
        sums[y] += h
    means = np.zeros((C, d))
    for c in range(C):
        if counts[c]:
            means[c] = sums[c] / counts[c]
    var = np.zeros(C)
    for h, y in zip(H, Y):
        var[y] += float(np.sum((h - means[y]) ** 2))
    for c in range(C):
        if counts[c]:
            var[c] /= counts[c]
    kept = [c for c in range(C) if counts[c] >= min_count]
    K = len(kept)
    mu = means[kept]
    M = mu - mu.mean(axis=0)
    pairs = [(i, j) for i in range(K) for j in range(i + 1, K)]
    r = {"n_classes": K, "n_samples": int(sum(counts[c] for c in kept))}

    r["cdnv"] = _mean([(var[kept[i]] + var[kept[j]]) / 2 / float(np.sum((mu[i] - mu[j]) ** 2)) ** 2 for i, j in pairs])
    norms = [float(np.linalg.norm(m)) for m in M]
    r["norms_mean"], r["norms_var"] = _mean(norms), _var_sample(norms)
    logs = [math.log(x) for x in norms]
    r["norms_log_mean"], r["norms_log_var"] = _mean(logs), _var_sample(logs)
    G = M @ M.T
    r["etf_error"] = _etf_distance(G)
    inter = [float(G[i, j]) for i, j in pairs]
    r["interfere_mean"], r["interfere_var"] = _mean(inter), _var_pop(inter)
    unit = [m / np.linalg.norm(m) for m in M]
    kern = [-math.log(float(np.linalg.norm(unit[i] - unit[j]))) for i, j in pairs]
    r["log_kern_mean"], r["log_kern_var"] = _mean(kern), _var_pop(kern)
    Wk = W[kept]
    r["dual_error"] = _etf_distance(Wk @ M.T)
    dots = [float(w @ m) for w, m in zip(Wk, M)]
    r["simdot_mean"], r["simdot_var"] = _mean(dots), _var_sample(dots)
    cos = [float(w @ m) / (np.linalg.norm(w) * np.linalg.norm(m)) for w, m in zip(Wk, M)]
    r["simcos_mean"], r["simcos_var"] = _mean(cos), _var_sample(cos)
    dist = [float(np.linalg.norm(w / np.linalg.norm(w) - m / np.linalg.norm(m))) for w, m in zip(Wk, M)]
    r["dists_mean"], r["dists_var"] = _mean(dist), _var_sample(dist)

    kept_set = set(kept)
    hits = total = 0
    hits_kept = 0  # the canonical NC4 (nearest *kept* mean), to show the two differ on this data
    for h, y in zip(H_val, Y_val):
        if int(y) not in kept_set:
            continue
        d2 = [float(np.sum((h - means[c]) ** 2)) for c in range(C)]
        ncc_all = min(range(C), key=lambda c: (d2[c], c))
        ncc_kept = min(kept, key=lambda c: (d2[c], c))
        logits = [float(W[c] @ h) + (0.0 if b is None else float(b[c])) for c in range(C)]
        lm = max(range(C), key=lambda c: (logits[c], -c))
        hits += int(ncc_all == lm)
        hits_kept += int(ncc_kept == lm)
        total += 1
    r["hits"], r["misses"] = hits, total - hits
    r["_hits_kept"] = hits_kept
    return r


# ---------------------------------------------------------------------------------------------
# Test data
# ---------------------------------------------------------------------------------------------


def imbalanced(seed=0, C=32, d=10, n=420, n_val=300, with_bias=False):
    """Zipf-like labels over C classes: the 4 last classes never occur in training, a few occur
    once or twice. Class 20 (rare) sits next to class 0 (frequent), and its classifier row next to
    class 0's, so the nearest of all C means differs from the nearest kept one at some positions."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, d, generator=g, dtype=F64) * 3.0
    centers[20] = centers[0] + 0.4 * torch.randn(d, generator=g, dtype=F64)
    p = 1.0 / torch.arange(1, C + 1, dtype=F64) ** 1.1
    p[C - 4 :] = 0  # unseen in training
    Y = torch.multinomial(p, n, replacement=True, generator=g)
    Y[:2] = 21  # rare classes: 21 twice, 22 once (and 20 forced rare)
    Y[2] = 22
    Y[Y == 20] = 0
    Y[3:5] = 20
    H = centers[Y] + torch.randn(n, d, generator=g, dtype=F64)
    pv = p.clone()
    pv[C - 4 :] = 0.02  # unseen labels occur at validation time (and are not counted)
    Yv = torch.multinomial(pv, n_val, replacement=True, generator=g)
    Yv[:52] = 0
    Hv = centers[Yv] + torch.randn(n_val, d, generator=g, dtype=F64)
    # positions near the origin, where the unseen classes' means sit: the lowest unseen class
    # (C − 4, argmin's tie-break among them) is the nearest of all C means there, and the LM
    # head prefers it through its row along u
    u = torch.randn(d, generator=g, dtype=F64)
    Hv[40:52] = 0.02 * u + 1e-3 * torch.randn(12, d, generator=g, dtype=F64)
    W = centers + 0.5 * torch.randn(C, d, generator=g, dtype=F64)
    W[20] = W[0] + 0.3 * torch.randn(d, generator=g, dtype=F64)
    W[C - 4] = 5.0 * u
    bias = 0.1 * torch.randn(C, generator=g, dtype=F64) if with_bias else None
    return H, Y, W, bias, Hv, Yv


#: the paper's own columns (n_positions and the debiased CDNV are lcfast's additions: the reference has none)
PAPER_COLUMNS = tuple(k for k in PAPER_KEYS if k != "n_positions" and not k.startswith("cdnv_debiased"))


def assert_matches_reference(got, want, rel, keys=PAPER_COLUMNS):
    for k in keys:
        assert got[k] is not None, k
        if k in ("n_classes", "n_samples", "hits", "misses", "degenerate_pairs"):
            assert got[k] == want.get(k, 0), k
            assert isinstance(got[k], int), k
        else:
            assert got[k] == pytest.approx(want[k], rel=rel, abs=rel * 1e-3), k


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_count", [1, 3, 7])
@pytest.mark.parametrize("with_bias", [False, True])
def test_paper_columns_match_brute_force(min_count, with_bias):
    H, Y, W, b, Hv, Yv = imbalanced(seed=min_count, with_bias=with_bias)
    C = W.shape[0]
    want = paper_reference(H, Y, W, Hv, Yv, C, min_count, b)
    got = measure_embeddings(H, Y, W, b, Hv, Yv, min_count=min_count, profile="paper", backend="torch")
    assert list(got) == list(result_keys("paper"))
    assert got["n_positions"] == H.shape[0]
    assert got["degenerate_pairs"] == 0
    assert_matches_reference(got, want, rel=1e-10)
    # the data make the paper's NC4 (all C means) and the canonical one (kept means) disagree
    canon = measure_embeddings(H, Y, W, b, Hv, Yv, min_count=min_count, backend="torch")
    assert canon["nc4_agreement"] == pytest.approx(want["_hits_kept"] / (want["hits"] + want["misses"]))
    assert want["hits"] != want["_hits_kept"]


def test_paper_columns_in_float32_features():
    H, Y, W, _, Hv, Yv = imbalanced(seed=11)
    want = paper_reference(H.float(), Y, W.float(), Hv.float(), Yv, W.shape[0], 2)
    got = measure_embeddings(H.float(), Y, W.float(), None, Hv.float(), Yv, min_count=2, profile="paper",
                             backend="torch")
    assert_matches_reference(got, want, rel=1e-9)


def test_measure_stats_from_saved_states_equals_embeddings(tmp_path):
    """The streaming path (ClassStats over all samples + an all-class NCCStats, both saved and
    reloaded) gives the paper columns measure_embeddings gives."""
    H, Y, W, b, Hv, Yv = imbalanced(seed=4)
    C, d = W.shape
    st = ClassStats(C, d)
    for i in range(0, H.shape[0], 97):
        st.update(H[i : i + 97], Y[i : i + 97])
    st.save(tmp_path / "train.safetensors")
    kept = st.counts >= 3
    ncc = NCCStats(C, st.means, kept, W, b, all_classes=True)
    for i in range(0, Hv.shape[0], 64):
        ncc.update(Hv[i : i + 64], Yv[i : i + 64])
    ncc.save(tmp_path / "val.safetensors")
    loaded = NCCStats.load(tmp_path / "val.safetensors")
    assert loaded.all_classes and torch.equal(loaded.hits_all, ncc.hits_all)
    got = measure_stats(tmp_path / "train.safetensors", W, b, loaded, min_count=3, profile="paper")
    ref = measure_embeddings(H, Y, W, b, Hv, Yv, min_count=3, profile="paper")
    for k in PAPER_KEYS:
        assert got[k] == pytest.approx(ref[k], rel=1e-10), k
    # canonical decisions from the same search are unchanged by the extra candidate set
    canon = NCCStats(C, st.means, kept, W, b)
    canon.update(Hv, Yv)
    assert torch.equal(canon.hits, ncc.hits) and torch.equal(canon.totals, ncc.totals)


def test_simplex_etf_known_values():
    """C equinorm simplex-ETF means, no within-class noise, W = M: raw-dot interference
    −‖m‖²/(C−1) with zero variance, ETF and duality errors 0, equal norms (sample variance 0),
    every NC4 decision agrees."""
    C, d, s = 6, 9, 2.5
    E = torch.eye(C, dtype=F64) - 1.0 / C
    M = torch.zeros(C, d, dtype=F64)
    M[:, :C] = E * s * math.sqrt(C / (C - 1))  # ‖m_c‖ = s
    Y = torch.arange(C).repeat_interleave(3)
    H = M[Y]
    r = measure_embeddings(H, Y, M, None, H, Y, profile="paper", backend="torch")
    assert r["norms_mean"] == pytest.approx(s) and r["norms_var"] == pytest.approx(0, abs=1e-24)
    assert r["interfere_mean"] == pytest.approx(-(s**2) / (C - 1), rel=1e-12)
    assert r["interfere_var"] == pytest.approx(0, abs=1e-24)
    assert r["etf_error"] < 1e-7 and r["dual_error"] < 1e-7
    assert r["cdnv"] == 0.0 and r["simcos_mean"] == pytest.approx(1.0) and r["dists_mean"] == pytest.approx(0, abs=1e-7)
    assert r["log_kern_var"] == pytest.approx(0, abs=1e-24)
    assert r["hits"] == H.shape[0] and r["misses"] == 0


def test_interference_mean_is_minus_mean_square_norm_over_c_minus_1():
    """For centred means Σ_{c<c'} ⟨m_c, m_c'⟩ = −Σ‖m_c‖²/2: the paper's table has this identity."""
    H, Y, W, *_ = imbalanced(seed=2)
    r = measure_embeddings(H, Y, W, profile="paper", min_count=2)
    C = r["n_classes"]
    mean_sq = r["norms_mean"] ** 2 + r["norms_var"] * (C - 1) / C
    assert r["interfere_mean"] == pytest.approx(-mean_sq / (C - 1), rel=1e-10)


def test_degenerate_pairs_keep_every_raw_dot_product():
    """Duplicate and zero-norm centred means: cdnv / log_kern leave those pairs out (the paper would
    give inf), the raw dot products are over every pair."""
    g = torch.Generator().manual_seed(3)
    C, d = 12, 5
    mu = torch.randn(C, d, generator=g, dtype=F64)
    mu[4] = mu[7]  # duplicate class means
    mu[9] = mu[torch.arange(C) != 9].mean(0)  # μ_9 = μ_G: a zero centred mean
    e = 0.1 * torch.randn(C, 2, d, generator=g, dtype=F64)
    H = torch.cat([mu[:, None] + e, mu[:, None] - e], 1).reshape(-1, d)  # class means exactly μ_c
    Y = torch.arange(C).repeat_interleave(4)
    st = ClassStats(C, d)
    st.update(H, Y)
    M = st.means - st.means.mean(0)
    r = measure_stats(st, profile="paper")
    assert r["degenerate_pairs"] == 1 + (C - 1)
    iu = torch.triu_indices(C, C, 1)
    G = (M @ M.T)[iu[0], iu[1]]
    assert r["interfere_mean"] == pytest.approx(float(G.mean()), rel=1e-10)
    assert r["interfere_var"] == pytest.approx(float(G.var(correction=0)), rel=1e-9)
    assert r["norms_log_mean"] is not None or float(M[9].norm()) == 0.0
    assert all(r[k] is None or math.isfinite(r[k]) for k in PAPER_KEYS)


def test_profiles_and_errors():
    H, Y, W, b, Hv, Yv = imbalanced(seed=5)
    canon = measure_embeddings(H, Y, W, b, Hv, Yv)
    assert list(canon) == list(result_keys("canonical"))
    # the paper's cdnv is the canonical CDNV at power 2, and the shared quantities agree
    p2 = measure_embeddings(H, Y, W, b, Hv, Yv, cdnv_power=2)
    paper = measure_embeddings(H, Y, W, b, Hv, Yv, profile="paper")
    assert paper["cdnv"] == pytest.approx(p2["nc1_cdnv"], rel=1e-12)
    for pk, ck in (("etf_error", "nc2_etf_error"), ("dual_error", "nc3_dual_error"), ("norms_mean", "nc2_norm_mean"),
                   ("log_kern_mean", "gnc2_log_mean"), ("log_kern_var", "gnc2_log_var"),
                   ("simcos_mean", "nc3_dual_cos_mean")):
        assert paper[pk] == pytest.approx(canon[ck], rel=1e-12), pk
    C = paper["n_classes"]
    assert paper["simcos_var"] == pytest.approx(canon["nc3_dual_cos_var"] * C / (C - 1), rel=1e-12)
    with pytest.raises(Exception, match="profile must be one of"):
        measure_embeddings(H, Y, profile="papers")
    with pytest.raises(Exception, match="power 2"):
        measure_embeddings(H, Y, profile="paper", cdnv_power=1.0)
    # without W or validation data the NC3 / NC4 columns are None, never NaN
    r = measure_embeddings(H, Y, profile="paper")
    assert r["dual_error"] is None and r["hits"] is None and r["misses"] is None and r["cdnv"] is not None


def test_old_decisions_without_all_classes_leave_hits_empty_with_a_warning():
    H, Y, W, _, Hv, Yv = imbalanced(seed=6)
    C, d = W.shape
    st = ClassStats(C, d)
    st.update(H, Y)
    ncc = NCCStats(C, st.means, st.counts >= 1, W)  # canonical decisions only
    ncc.update(Hv, Yv)
    with pytest.warns(UserWarning, match="recollect"):
        r = measure_stats(st, W, None, ncc, profile="paper")
    assert r["hits"] is None and r["misses"] is None and r["cdnv"] is not None


def test_single_kept_class():
    H, Y, W, _, Hv, Yv = imbalanced(seed=7)
    r = measure_embeddings(H, Y, W, None, Hv, Yv, min_count=int(torch.bincount(Y).max()), profile="paper")
    assert r["n_classes"] == 1
    for k in ("cdnv", "interfere_mean", "etf_error", "dual_error", "norms_var", "norms_log_mean", "simdot_var"):
        assert r[k] is None, k
    assert r["hits"] is not None and r["hits"] + r["misses"] == int((Yv == int(torch.bincount(Y).argmax())).sum())
