"""Numbers at the edges of the statistics API (docs/bad-input.md): half-precision accumulators are
refused, degenerate input says so instead of reading as perfect collapse, numpy arrays work wherever
tensors do."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from lcfast.errors import UsageError
from lcfast.metrics.embeddings import measure_embeddings
from lcfast.metrics.measure import DegenerateInputWarning, measure_stats
from lcfast.stats.classstats import ClassStats
from lcfast.stats.ncc import NCCStats


# -- accumulator dtype ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulators_are_refused(dtype):
    with pytest.raises(UsageError, match=str(dtype)):
        ClassStats(3, 4, dtype=dtype)
    with pytest.raises(UsageError, match=str(dtype)):
        ClassStats.second_pass(torch.zeros(3, 4), dtype=dtype)


@pytest.mark.parametrize("acc", [torch.float64, torch.float32])
def test_half_precision_features_count_exactly(acc):
    """8,000 bfloat16 rows of one class (the case that lost 224 counts with bfloat16 accumulators):
    counted exactly, and the mean is the float64 mean of the bfloat16 values."""
    g = torch.Generator().manual_seed(0)
    H = torch.randn(8000, 4, generator=g).to(torch.bfloat16)
    Y = torch.zeros(8000, dtype=torch.int64)
    st = ClassStats(3, 4, dtype=acc)
    for i in range(0, 8000, 100):
        st.update(H[i:i + 100], Y[i:i + 100])
    assert st.counts.tolist() == [8000, 0, 0]
    ref = H.double().mean(0)
    torch.testing.assert_close(st.means[0].double(), ref, rtol=0, atol=1e-12 if acc == torch.float64 else 1e-5)


def test_ncc_with_bfloat16_inputs_equals_float64_of_the_same_values():
    g = torch.Generator().manual_seed(1)
    C, d, N = 5, 8, 300
    W = torch.randn(C, d, generator=g).to(torch.bfloat16)
    mu = torch.randn(C, d, generator=g).to(torch.bfloat16)
    H = torch.randn(N, d, generator=g).to(torch.bfloat16)
    Y = torch.randint(0, C, (N,), generator=g)
    a = NCCStats(C, mu, torch.ones(C, dtype=torch.bool), W).update(H, Y, backend="torch")
    b = NCCStats(C, mu.double(), torch.ones(C, dtype=torch.bool), W.double()).update(H.double(), Y, backend="torch")
    assert torch.equal(a.hits, b.hits) and torch.equal(a.totals, b.totals) and int(a.totals.sum()) == N


# -- degenerate input -------------------------------------------------------------------------------
def _degenerate(recorded) -> list[str]:
    return [str(w.message) for w in recorded if issubclass(w.category, DegenerateInputWarning)]


def test_identical_features_are_not_perfect_collapse():
    H = torch.full((120, 6), 0.1)  # 0.1 is not exact in binary: rounding must not fake a Σ_B > 0
    Y = torch.arange(120) % 3
    W = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = measure_embeddings(H, Y, W=W, H_val=H, Y_val=Y)
    for k in ("nc1_trace_ratio", "nc1_pinv", "nc1_cdnv", "nc2_norm_mean", "nc2_etf_error"):
        assert r[k] is None, (k, r[k])  # undefined — never 0
    msgs = _degenerate(rec)
    assert len(msgs) == 1 and "all 3 kept class means are equal" in msgs[0] and "features are identical" in msgs[0]


def test_equal_means_with_spread_within_classes():
    """Σ_B = 0 but Σ_W > 0: the trace ratio is x/0 — undefined, not infinite, not 0."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    H = torch.cat([X, X, X])  # three classes with the same samples: equal means
    Y = torch.arange(3).repeat_interleave(50)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = measure_embeddings(H, Y)
    assert r["nc1_trace_ratio"] is None and r["nc1_pinv"] is None
    msgs = _degenerate(rec)
    assert len(msgs) == 1 and "Σ_B = 0" in msgs[0] and "identical" not in msgs[0]


def test_single_kept_class_and_zero_classifier_say_so(tmp_path):
    g = torch.Generator().manual_seed(3)
    H = torch.randn(60, 4, generator=g)
    Y = torch.cat([torch.zeros(55, dtype=torch.int64), torch.ones(5, dtype=torch.int64)])
    st = ClassStats(2, 4).update(H, Y)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = measure_stats(st, W=torch.zeros(2, 4), min_count=10)  # one class kept, W = 0
    assert r["n_classes"] == 1 and r["nc1_trace_ratio"] is None and r["nc3_dual_cos_mean"] is None
    msgs = _degenerate(rec)
    assert any("a single kept class (min_count=10)" in m for m in msgs)
    assert any("the classifier W is zero for every kept class" in m for m in msgs)


def test_partly_zero_classifier_and_healthy_input():
    g = torch.Generator().manual_seed(4)
    H = torch.randn(300, 6, generator=g)
    Y = torch.arange(300) % 4
    W = torch.randn(4, 6, generator=g)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = measure_embeddings(H, Y, W=W)
    assert _degenerate(rec) == []  # healthy input: no warning, every metric a number
    assert all(isinstance(r[k], float) and math.isfinite(r[k])
               for k in ("nc1_trace_ratio", "nc1_pinv", "nc3_dual_error"))
    W[2] = 0
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        measure_embeddings(H, Y, W=W)
    assert _degenerate(rec) == [
        "measure: 1 of 4 kept classes have a zero classifier row w_c: left out of the NC3 cosines"]


# -- numpy inputs -------------------------------------------------------------------------------------
FEATURES = [np.float32, np.float64, np.int32]
LABELS = [np.int32, np.int64, np.uint8]


def _data(seed=5, N=400, C=6, d=8):
    rng = np.random.default_rng(seed)
    H = rng.standard_normal((N, d)) * 10
    Y = rng.integers(0, C, N)
    W = rng.standard_normal((C, d))
    return H, Y, W


@pytest.mark.parametrize("ht", FEATURES)
@pytest.mark.parametrize("yt", LABELS)
def test_measure_embeddings_takes_numpy(ht, yt):
    H, Y, W = _data()
    Hn, Yn, Wn = H.astype(ht), Y.astype(yt), W.astype(ht if ht != np.int32 else np.float64)
    a = measure_embeddings(Hn, Yn, W=Wn, H_val=Hn, Y_val=Yn, backend="torch")
    b = measure_embeddings(torch.from_numpy(Hn), torch.from_numpy(Y.astype(np.int64)), W=torch.from_numpy(Wn),
                           H_val=torch.from_numpy(Hn), Y_val=torch.from_numpy(Y.astype(np.int64)), backend="torch")
    assert a == b and a["nc4_agreement"] is not None and a["nc1_trace_ratio"] > 0


@pytest.mark.parametrize("ht", FEATURES)
def test_classstats_and_ncc_update_take_numpy(ht):
    H, Y, W = _data(6)
    Hn = H.astype(ht)
    a = ClassStats(6, 8, covariance=True).update(Hn, Y.astype(np.int32))
    b = ClassStats(6, 8, covariance=True).update(torch.from_numpy(Hn), torch.from_numpy(Y))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.means, b.means) and torch.equal(a.covariance, b.covariance)
    two = ClassStats.second_pass(a.means.numpy()).update(Hn, Y)
    assert torch.equal(two.counts, a.counts)
    kept = np.ones(6, dtype=bool)
    na = NCCStats(6, a.means.numpy(), kept, W).update(Hn, Y.astype(np.int32))
    nb = NCCStats(6, a.means, torch.from_numpy(kept), torch.from_numpy(W))
    nb = nb.update(torch.from_numpy(Hn), torch.from_numpy(Y))
    assert torch.equal(na.hits, nb.hits) and torch.equal(na.totals, nb.totals)


def test_read_only_and_strided_arrays(tmp_path):
    H, Y, _ = _data(7)
    p = tmp_path / "h.npy"
    np.save(p, H.astype(np.float32))
    Hm = np.load(p, mmap_mode="r")  # read-only memory map
    a = ClassStats(6, 8).update(Hm, Y)
    b = ClassStats(6, 8).update(np.ascontiguousarray(Hm), Y)
    assert torch.equal(a.means, b.means)
    c = ClassStats(6, 8).update(H[::-1], Y[::-1])  # negative strides
    d = ClassStats(6, 8).update(np.ascontiguousarray(H[::-1]), np.ascontiguousarray(Y[::-1]))
    assert torch.equal(c.counts, d.counts)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([{}, {}], dtype=object), "text", {"H": 1}])
def test_non_numeric_arrays_are_usage_errors(bad):
    with pytest.raises(UsageError, match="ClassStats.update: H"):
        ClassStats(2, 2).update(bad, np.zeros(2, dtype=np.int64))
    with pytest.raises(UsageError, match="measure_embeddings: H"):
        measure_embeddings(bad, np.zeros(2, dtype=np.int64))
