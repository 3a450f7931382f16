"""The fused CPU accumulation of ClassStats.update (lcfast._core.class_stats_accumulate) against its
torch twin (the same update with the fused path switched off) and float64 / 80-bit references, on
adversarial inputs: large offsets, tiny counts, float32 vs float64 input, Zipf labels, one class
for all rows, B = 1, threads 1 vs 2, covariance and two-pass modes, and batches it must refuse
(non-finite values, huge features or references) so that the torch path errors or skips as
documented without a half-updated state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcfast import _core
from lcfast.errors import DataError, UsageError
from lcfast.stats import classstats as cs
from lcfast.stats.classstats import ClassStats
from lcfast.stats.naive import two_pass_naive

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the batches that went through the fused path (it must not be silently skipped)."""
    calls = []
    orig = ClassStats._fused_update

    def spy(self, H, Y):
        done = orig(self, H, Y)
        calls.append(done)
        return done

    monkeypatch.setattr(ClassStats, "_fused_update", spy)
    return calls


def _torch_only(fn):
    old = cs._FUSED_ENABLED
    cs._FUSED_ENABLED = False
    try:
        return fn()
    finally:
        cs._FUSED_ENABLED = old


def _state(st: ClassStats):
    return [t.clone() for t in (st._n, st._ref, st._s1, st._s2)] + ([st._cov.clone()] if st._cov is not None else [])


def _zipf(N, C, g, s=1.1):
    p = 1.0 / torch.arange(1, C + 1, dtype=F64) ** s
    return torch.multinomial(p / p.sum(), N, replacement=True, generator=g)


def _cases():
    """(name, H float64, Y, C): adversarial batches."""
    g = torch.Generator().manual_seed(0)
    out = []
    C, d = 37, 19
    Y = _zipf(2000, C, g)
    mu = 1e6 + 1e3 * torch.randn(C, d, generator=g, dtype=F64)  # ‖μ‖ ≈ 4e6, σ = 1
    out.append(("zipf, offset 1e6", mu[Y] + torch.randn(2000, d, generator=g, dtype=F64), Y, C))
    Y = torch.randint(0, 500, (300,), generator=g)  # most classes 0–2 rows
    out.append(("tiny counts", torch.randn(300, 33, generator=g, dtype=F64) * 5 - 3, Y, 500))
    Y = torch.full((700,), 4, dtype=torch.int64)
    out.append(("one class", 1e5 + torch.randn(700, 64, generator=g, dtype=F64), Y, 9))
    out.append(("B=1", torch.randn(1, 8, generator=g, dtype=F64), torch.tensor([2]), 3))
    Y = torch.randint(0, 3000, (4096,), generator=g)  # > 1 MB of features: two worker threads
    out.append(("many rows", torch.randn(4096, 96, generator=g, dtype=F64) + 7, Y, 3000))
    return out


@pytest.mark.parametrize("in_dtype", [torch.float32, F64])
@pytest.mark.parametrize("mode", ["one-pass", "two-pass", "covariance"])
@pytest.mark.parametrize("case", range(5))
def test_fused_equals_torch_twin_and_reference(case, mode, in_dtype, fused_calls):
    name, H64, Y, C = _cases()[case]
    H = H64.to(in_dtype)
    d = H.shape[1]
    n_ref, mu_ref, var_ref, cov_ref = two_pass_naive(H.to(F64), Y, C)  # exact, on the values fed in
    pieces = [0, H.shape[0] // 3, H.shape[0]] if H.shape[0] > 2 else [0, H.shape[0]]

    def run():
        if mode == "two-pass":
            st = ClassStats.second_pass(mu_ref, covariance=True)
        else:
            st = ClassStats(C, d, covariance=mode == "covariance")
        for a, b in zip(pieces[:-1], pieces[1:]):
            st.update(H[a:b], Y[a:b], backend="torch")
        return st

    fused = run()
    assert fused_calls and all(fused_calls), f"{name}: the fused path was not taken"
    fused_calls.clear()
    twin = _torch_only(run)
    assert not any(fused_calls)
    assert torch.equal(fused.counts, twin.counts) and torch.equal(fused.counts, n_ref.to(torch.int64))
    seen = n_ref > 0
    # the twin's sums and the fused ones differ only in the order of the ‖x‖² additions
    torch.testing.assert_close(fused._s1, twin._s1, rtol=1e-13, atol=1e-9)
    torch.testing.assert_close(fused._s2, twin._s2, rtol=1e-13, atol=1e-9)
    torch.testing.assert_close(fused.means[seen], mu_ref[seen], rtol=1e-13, atol=0)
    scale = var_ref[seen].clamp_min(1e-300)
    assert float(((fused.variances[seen] - var_ref[seen]).abs() / scale).max()) < 1e-11, name
    if mode != "one-pass":
        torch.testing.assert_close(fused.covariance, cov_ref, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(fused.covariance, twin.covariance, rtol=1e-12, atol=1e-12)


def test_large_offset_variances_against_80_bit_truth(fused_calls):
    """‖μ‖ ≈ 1e6, σ = 1 (the textbook one-pass formula keeps ~3 digits here): the fused path keeps
    float64 accuracy, like the torch path (cf. test_one_pass_matches_two_pass_with_large_offsets)."""
    g = torch.Generator().manual_seed(7)
    C, d, N = 9, 5, 3000
    Y = torch.randint(0, C, (N,), generator=g)
    mu = 1e6 + 1e3 * torch.randn(C, d, generator=g, dtype=F64)
    H = mu[Y] + torch.randn(N, d, generator=g, dtype=F64)
    st = ClassStats(C, d)
    for i in range(0, N, 500):
        st.update(H[i : i + 500], Y[i : i + 500], backend="torch")
    assert all(fused_calls)
    Hn, Yn = H.numpy().astype(np.longdouble), Y.numpy()
    truth = torch.tensor([float(((Hn[Yn == c] - Hn[Yn == c].mean(0)) ** 2).sum(1).mean()) for c in range(C)], dtype=F64)
    assert float(((st.variances - truth).abs() / truth).max()) < 1e-13


def test_thread_count_does_not_change_a_bit(fused_calls):
    g = torch.Generator().manual_seed(3)
    Y = _zipf(8192, 700, g)
    H = torch.randn(8192, 64, generator=g) * 3 + 100  # 2 MB of float32: the kernel splits it
    states = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        states.append(_state(ClassStats(700, 64, covariance=True).update(H, Y, backend="torch")))
    assert all(fused_calls)
    for a, b in zip(*states):
        assert torch.equal(a, b)


def test_noncontiguous_features_and_cov_classes(fused_calls):
    g = torch.Generator().manual_seed(4)
    Hwide = torch.randn(400, 30, generator=g, dtype=F64)
    H = Hwide[:, ::2]  # strided view
    Y = torch.randint(0, 11, (400,), generator=g)
    mask = torch.zeros(11, dtype=torch.bool)
    mask[1::3] = True
    st = ClassStats(11, 15, covariance=True, cov_classes=mask).update(H, Y, backend="torch")
    assert all(fused_calls)
    sel = mask[Y]
    _, mu, var, cov = two_pass_naive(H[sel], Y[sel], 11)
    torch.testing.assert_close(st.covariance, cov, rtol=1e-12, atol=1e-12)
    _, mu, var, _ = two_pass_naive(H, Y, 11)
    torch.testing.assert_close(st.variances, var, rtol=1e-12, atol=1e-12)


def test_nonfinite_batch_is_refused_before_any_write(fused_calls):
    """A batch with NaN / inf never reaches the fused kernel: the torch path raises (state
    unchanged) or skips and counts, exactly as before."""
    g = torch.Generator().manual_seed(5)
    H = torch.randn(200, 6, generator=g)
    Y = torch.randint(0, 7, (200,), generator=g)
    st = ClassStats(7, 6).update(H, Y, backend="torch")
    before = _state(st)
    bad = H.clone()
    bad[5, 2] = float("nan")
    bad[150, 0] = float("-inf")
    with pytest.raises(DataError, match="2 of 200"):
        st.update(bad, Y, backend="torch")
    for a, b in zip(before, _state(st)):
        assert torch.equal(a, b)
    sk = ClassStats(7, 6, nonfinite="skip").update(bad, Y, backend="torch")
    ok = torch.isfinite(bad).all(1)
    ref = ClassStats(7, 6).update(bad[ok], Y[ok], backend="torch")
    assert sk.skipped == 2
    torch.testing.assert_close(sk.variances, ref.variances, rtol=1e-13, atol=1e-13)
    assert fused_calls == [True, False, False, True]


def test_huge_features_or_references_take_the_checked_path(fused_calls):
    """float64 features above 1e140 (‖h − r‖² could overflow) are left to the torch path, and so is
    any batch once a reference is that large — also after merge, whose adopted references must
    invalidate the cached bound: a silent inf in Σ‖h − r‖² is never produced."""
    d = 4
    st = ClassStats(3, d)
    st.update(torch.full((2, d), 1e155, dtype=F64), torch.tensor([1, 1]), backend="torch")  # ref 1e155, q = 0
    assert fused_calls == [False]
    with pytest.raises(DataError, match="overflows"):
        st.update(torch.zeros(3, d, dtype=F64), torch.tensor([1, 1, 1]), backend="torch")
    assert fused_calls[-1] is False
    # a state with small references adopts the huge one (a class it has not seen) through merge
    a = ClassStats(3, d).update(torch.ones(4, d), torch.tensor([0, 0, 2, 2]), backend="torch")
    assert fused_calls[-1] is True
    a.merge(st)
    before = _state(a)
    with pytest.raises(DataError, match="overflows"):
        a.update(torch.zeros(2, d), torch.tensor([0, 1]), backend="torch")
    assert fused_calls[-1] is False
    for x, y in zip(before, _state(a)):
        assert torch.equal(x, y)
    # and back to the fused path when every reference is small again
    b = ClassStats(3, d).update(torch.ones(2, d), torch.tensor([1, 1]), backend="torch")
    b.update(torch.ones(2, d) * 2, torch.tensor([1, 2]), backend="torch")
    assert fused_calls[-2:] == [True, True]


def test_new_classes_keep_the_cached_bound_exact(fused_calls):
    """References written by update (new classes) extend the cached max |r| without a re-read."""
    st = ClassStats(4, 3)
    st.update(torch.ones(2, 3), torch.tensor([0, 1]), backend="torch")
    st.update(torch.full((1, 3), 1e150, dtype=F64), torch.tensor([2]), backend="torch")  # new class, huge ref
    assert st._ref_amax == 1e150
    assert fused_calls == [True, False]
    st.update(torch.ones(1, 3), torch.tensor([0]), backend="torch")
    assert fused_calls[-1] is False  # the huge reference keeps the batch on the checked path


def test_float32_state_and_other_devices_use_the_torch_path(fused_calls):
    H = torch.randn(50, 4)
    Y = torch.randint(0, 3, (50,))
    ClassStats(3, 4, dtype=torch.float32).update(H, Y, backend="torch")
    assert fused_calls == [False]
    st64 = ClassStats(3, 4).update(H.to(torch.bfloat16), Y, backend="torch")  # no numpy bfloat16
    assert fused_calls[-1] is False
    _, mu, _, _ = two_pass_naive(H.to(torch.bfloat16).double(), Y, 3)
    torch.testing.assert_close(st64.means, mu, rtol=1e-12, atol=1e-12)


def test_extension_rejects_bad_arguments():
    h = np.zeros((4, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 0], dtype=np.int64)
    refs, s1 = np.zeros((3, 3)), np.zeros((3, 3))
    s2, n = np.zeros(3), np.zeros(3)
    _core.class_stats_accumulate(h, y, refs, s1, s2, n, None, 2)
    assert n.tolist() == [2.0, 1.0, 1.0]
    with pytest.raises(UsageError, match="label 3 outside"):
        _core.class_stats_accumulate(h, np.array([0, 1, 3, 0]), refs, s1, s2, n, None, 1)
    with pytest.raises(UsageError, match="float32 or float64"):
        _core.class_stats_accumulate(h.astype(np.float16), y, refs, s1, s2, n, None, 1)
    with pytest.raises(UsageError, match="columns"):
        _core.class_stats_accumulate(np.zeros((4, 2), dtype=np.float32), y, refs, s1, s2, n, None, 1)
    with pytest.raises(UsageError, match="inconsistent shapes"):
        _core.class_stats_accumulate(h, y[:3], refs, s1, s2, n, None, 1)
    with pytest.raises(UsageError, match="x_out"):
        _core.class_stats_accumulate(h, y, refs, s1, s2, n, np.zeros((3, 3)), 1)
    with pytest.raises(UsageError):  # not contiguous
        _core.class_stats_accumulate(np.zeros((4, 6), dtype=np.float32)[:, ::2], y, refs, s1, s2, n, None, 1)
    assert n.tolist() == [2.0, 1.0, 1.0]  # nothing written by the refused calls
    assert _core.class_stats_rows_finite(h, 1)
    h[3, 2] = np.inf
    assert not _core.class_stats_rows_finite(h, 2)
    assert not _core.class_stats_rows_finite(np.array([[1e141]]), 1)
    with pytest.raises(UsageError):
        _core.class_stats_rows_finite(np.zeros((2, 2), dtype=np.float16), 1)
