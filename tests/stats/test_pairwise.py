"""The blocked pairwise sweep against full C×C grids, known geometries, degenerate pairs, precision."""

from __future__ import annotations

import math

import pytest
import torch

from lcfast.backend import Moments
from lcfast.errors import UsageError
from lcfast.stats.naive import pairwise_naive
from lcfast.stats.pairwise import (
    DEGENERATE_TOL,
    cross_gram_sums,
    etf_error,
    gram_sums,
    pairwise_sweep,
    pairwise_torch,
)

from helpers import assert_close

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(C, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(C, d, generator=g, dtype=F64) * torch.rand(C, 1, generator=g, dtype=F64).add(0.5)
    M -= M.mean(0)
    var = torch.rand(C, generator=g, dtype=F64) * 2
    return M, var


def _etf(C, d, seed=0):
    """Simplex ETF: C unit-norm rows with pairwise cosine −1/(C−1), embedded in d ≥ C dims."""
    g = torch.Generator().manual_seed(seed)
    E = math.sqrt(C / (C - 1)) * (torch.eye(C, dtype=F64) - 1.0 / C)
    Q, _ = torch.linalg.qr(torch.randn(d, C, generator=g, dtype=F64))
    return E @ Q.T


def _close_moments(a: Moments, b: Moments, rtol=1e-10, atol=1e-12, what=""):
    assert a.n == b.n, what
    assert_close(a.mean, b.mean, rtol=rtol, atol=atol, what=f"{what} mean")
    assert_close(a.m2, b.m2, rtol=rtol, atol=atol, what=f"{what} m2")


def _close(a, b, rtol=1e-10):
    assert a.degenerate == b.degenerate
    for k in ("cdnv", "cos", "logk"):
        _close_moments(getattr(a, k), getattr(b, k), rtol=rtol, what=k)
    for k in ("gram_sum", "gram_sq_sum", "gram_trace"):
        assert_close(getattr(a, k), getattr(b, k), rtol=1e-11, atol=1e-9, what=k)
    assert_close(a.row_cdnv_sum, b.row_cdnv_sum, rtol=rtol, atol=1e-11, what="row_cdnv_sum")
    assert_close(a.row_cos_sum, b.row_cos_sum, rtol=rtol, atol=1e-11, what="row_cos_sum")
    assert_close(a.row_count.to(torch.int64), b.row_count.to(torch.int64), what="row_count")


@pytest.mark.parametrize("block", [1, 3, 7, 64, 512])
@pytest.mark.parametrize("power", [1.0, 2.0])
def test_matches_full_grid(block, power):
    M, var = _rand(45, 6, seed=block)  # C > d: Gram sums through the d×d matrix
    _close(pairwise_torch(M, var, cdnv_power=power, block=block), pairwise_naive(M, var, cdnv_power=power))


@pytest.mark.parametrize("block", [4, 512])
def test_matches_full_grid_more_dims_than_classes(block):
    M, var = _rand(20, 33, seed=3)  # C < d: Gram sums through C×C tiles
    _close(pairwise_torch(M, var, block=block), pairwise_naive(M, var))
    _close(pairwise_sweep(M, var, backend="torch", block=block), pairwise_naive(M, var))


@pytest.mark.parametrize("C,d", [(10, 10), (17, 40)])
def test_simplex_etf(C, d):
    M = _etf(C, d) * 3.0
    var = torch.zeros(C, dtype=F64)
    ps = pairwise_torch(M, var, block=4)
    assert ps.degenerate == 0
    assert ps.cos.n == C * (C - 1) / 2
    assert ps.cos.mean == pytest.approx(-1.0 / (C - 1), abs=1e-14)
    assert ps.cos.var == pytest.approx(0.0, abs=1e-28)
    assert ps.logk.var == pytest.approx(0.0, abs=1e-26)
    # ‖m̂ − m̂'‖² = 2 + 2/(C−1) for every pair
    assert ps.logk.mean == pytest.approx(-0.5 * math.log(2 + 2 / (C - 1)), abs=1e-14)
    assert ps.cdnv.mean == 0.0 and ps.cdnv.var == 0.0
    assert etf_error(ps.gram_sum, ps.gram_sq_sum, ps.gram_trace, C) < 1e-7
    torch.testing.assert_close(ps.row_cos_sum, torch.full((C,), -1.0, dtype=F64), rtol=0, atol=1e-13)


def test_etf_error_formula_matches_explicit():
    M, _ = _rand(12, 5, seed=4)
    G = M @ M.T
    C = 12
    E = (torch.eye(C, dtype=F64) - 1.0 / C) / math.sqrt(C - 1)
    explicit = float(torch.linalg.norm(G / torch.linalg.norm(G) - E))
    s, sq, tr = gram_sums(M)
    assert etf_error(s, sq, tr, C) == pytest.approx(explicit, rel=1e-12)
    W = torch.randn(C, 5, dtype=F64)
    A = W @ M.T
    explicit = float(torch.linalg.norm(A / torch.linalg.norm(A) - E))
    assert etf_error(*cross_gram_sums(W, M), C) == pytest.approx(explicit, rel=1e-12)
    W = torch.randn(C, 30, dtype=F64)
    M2 = torch.randn(C, 30, dtype=F64)  # C < d path
    A = W @ M2.T
    assert cross_gram_sums(W, M2) == pytest.approx((float(A.sum()), float((A * A).sum()), float(A.trace())), rel=1e-12)


def test_degenerate_pairs_counted_never_nan():
    """Duplicates (equal means), collinear means (equal directions) and a zero-norm mean."""
    M, var = _rand(30, 8, seed=5)
    M[4] = M[11]          # duplicate
    M[20] = M[11]         # triple: pairs (4,11), (4,20), (11,20)
    M[7] = 2.5 * M[9]     # same direction, different norm: cos/logk undefined
    M[15] = 0.0           # zero-norm: 29 pairs
    ref = pairwise_naive(M, var)
    assert ref.degenerate == 3 + 1 + 29
    for block in (1, 4, 6, 512):
        ps = pairwise_torch(M, var, block=block)
        _close(ps, ref)
        for m in (ps.cdnv, ps.cos, ps.logk):
            assert math.isfinite(m.mean) and math.isfinite(m.m2)
        assert bool(torch.isfinite(ps.row_cdnv_sum).all()) and bool(torch.isfinite(ps.row_cos_sum).all())
    assert int(ps.row_count[15]) == 0 and float(ps.row_cdnv_sum[15]) == 0.0


def test_all_pairs_degenerate_and_tiny_inputs():
    M = torch.ones(5, 3, dtype=F64)
    ps = pairwise_torch(M, torch.ones(5, dtype=F64))
    assert ps.degenerate == 10 and ps.cdnv.n == 0
    one = pairwise_torch(torch.randn(1, 3, dtype=F64), torch.ones(1, dtype=F64))
    assert one.degenerate == 0 and one.cos.n == 0
    two = pairwise_torch(torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64), torch.tensor([1.0, 3.0], dtype=F64))
    assert two.cos.mean == -1.0 and two.cdnv.mean == pytest.approx(0.5)  # (1+3)/(2·4)
    with pytest.raises(UsageError):
        pairwise_torch(torch.randn(3, 2), torch.ones(4))


def test_shifted_sums_keep_tiny_variances():
    """Near-ETF geometry (perturbation 1e-8): var(cos) ≈ 2e-16 while mean(cos)² ≈ 4e-3, so the
    unshifted Σx²/n − (Σx/n)² cancels ~13 of 16 digits (observed relative error 3.6e-3, checked
    > 1e-4 below); the sweep's shifted sums agree with the full-grid two-pass reference to 4e-10
    (cos, log-kernel) and 1e-9 (cdnv)."""
    C = 16
    g = torch.Generator().manual_seed(6)
    M = _etf(C, 24) + 1e-8 * torch.randn(C, 24, generator=g, dtype=F64)
    M -= M.mean(0)
    var = torch.ones(C, dtype=F64)
    ref = pairwise_naive(M, var)
    ps = pairwise_torch(M, var, block=5)
    assert ps.cos.var == pytest.approx(ref.cos.var, rel=1e-8)
    assert ps.logk.var == pytest.approx(ref.logk.var, rel=1e-8)
    assert ps.cdnv.var == pytest.approx(ref.cdnv.var, rel=1e-8)
    # the cancellation the shift avoids
    Mh = M / M.norm(dim=1, keepdim=True)
    cos = (Mh @ Mh.T)[torch.ones(C, C, dtype=torch.bool).triu(1)]
    naive = float((cos * cos).mean() - cos.mean() ** 2)
    assert abs(naive - ref.cos.var) / ref.cos.var > 1e-4


def test_degenerate_tolerance_documented_value():
    assert DEGENERATE_TOL == pytest.approx(1e3 * torch.finfo(F64).eps)
    M = torch.tensor([[1.0, 0.0], [1.0 + 1e-9, 0.0], [-2.0, 0.0], [0.0, 1.0]], dtype=F64)
    M -= M.mean(0)
    # rows 0 and 1 differ by 1e-9: dist² = 1e-18 ≤ tol·(‖m_0‖² + ‖m_1‖²) ≈ 4e-13 → degenerate
    ps = pairwise_torch(M, torch.ones(4, dtype=F64))
    ref = pairwise_naive(M, torch.ones(4, dtype=F64))
    assert ps.degenerate == ref.degenerate >= 1


@pytest.mark.parametrize("block", [7, 64])
def test_near_duplicates_resolved_exactly(block):
    """Close but distinct means (relative squared distance 1e-4 … 1e-12, above the degenerate
    tolerance) carry huge CDNVs that dominate the mean; the Gram form's rounding (BLAS-dependent)
    would put a relative error of up to ~1e-3 on them. The sweep resolves such pairs from explicit
    differences, so it agrees with the exact full grid to 1e-9 whatever the BLAS."""
    M, var = _rand(40, 24, seed=11)
    for k, rel in enumerate([1e-4, 1e-6, 1e-8, 1e-10, 1e-12]):
        a, b = 2 * k, 2 * k + 1
        u = torch.randn(24, generator=torch.Generator().manual_seed(k), dtype=F64)
        M[b] = M[a] + math.sqrt(rel) * M[a].norm() * u / u.norm()
    v = torch.randn(24, generator=torch.Generator().manual_seed(99), dtype=F64)
    M[30] = 3.0 * M[31] + 1e-5 * M[31].norm() * v / v.norm()  # nearly parallel: dhat² ≈ 1e-11, far apart
    want = pairwise_naive(M, var, exact=True)
    assert want.degenerate == 0
    got = pairwise_torch(M, var, block=block)
    assert got.degenerate == want.degenerate
    for k in ("cdnv", "cos", "logk"):
        _close_moments(getattr(got, k), getattr(want, k), rtol=1e-9)
    # row sums are accumulated shifted by the mean CDNV (≈2e8 here, set by the near pairs), so a row
    # of O(1) CDNVs keeps ~eps·2e8 absolute: 1e-6 relative is what that design gives, not the Gram form
    assert torch.allclose(got.row_cdnv_sum, want.row_cdnv_sum, rtol=1e-6, atol=0)
    assert torch.equal(got.row_count, want.row_count)


def test_refine_band_is_where_the_gram_form_is_trusted():
    """Outside the band the Gram form's rounding (≤ 16√d·eps of the norms) is < 1e-9 relative."""
    from lcfast.stats.pairwise import refine_band

    for d in (1, 64, 4096):
        band = refine_band(d)
        assert DEGENERATE_TOL < band < 1e-3
        assert 16 * math.sqrt(d) * torch.finfo(F64).eps / band <= 1e-9 * (1 + 1e-12)
