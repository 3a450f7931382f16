"""The debiased CDNV of the pairwise sweep (lcfast.stats.pairwise, docs/metrics.md "Precision")
against the naive full-grid reference, on adversarial inputs: singleton classes (no variance
estimate), duplicate means, pairs whose corrected distance is ≤ 0, every CDNV power."""

from __future__ import annotations

import math

import pytest
import torch

from lcfast.stats.naive import pairwise_naive
from lcfast.stats.pairwise import pairwise_torch

F64 = torch.float64


def adversarial(C, d, seed):
    """Centred means with a duplicate pair and a near pair, counts 1..5 (singletons included) and
    variances large enough that many corrected distances are ≤ 0."""
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(C, d, generator=g, dtype=F64)
    M[1] = M[2]  # duplicate: degenerate, not "non-positive"
    M[C - 1] = M[C - 2] + 1e-3  # near pair: corrected distance ≤ 0
    M -= M.mean(0)
    var = torch.rand(C, generator=g, dtype=F64) * 3
    n = torch.randint(1, 6, (C,), generator=g)
    return M, var, n


@pytest.mark.parametrize("power", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("C,d,block", [(50, 8, 16), (7, 3, 4), (40, 5, 512)])
def test_sweep_matches_naive(power, C, d, block):
    M, var, n = adversarial(C, d, seed=C + d)
    got = pairwise_torch(M, var, cdnv_power=power, block=block, counts=n)
    want = pairwise_naive(M, var, cdnv_power=power, counts=n)
    assert got.degenerate == want.degenerate == 1
    assert got.nonpositive == want.nonpositive > 0
    assert got.cdnv_debiased.n == want.cdnv_debiased.n > 0
    assert got.cdnv_debiased.mean == pytest.approx(want.cdnv_debiased.mean, rel=1e-11)
    # every non-degenerate pair is either in the debiased mean or counted as non-positive
    assert got.cdnv_debiased.n + got.nonpositive == got.cdnv.n
    # the plain statistics are unchanged by asking for the debiased one
    plain = pairwise_torch(M, var, cdnv_power=power, block=block)
    assert plain.cdnv_debiased is None and plain.cdnv == got.cdnv


def test_singletons_and_tiny_counts():
    """n_c = 1 has no variance estimate (σ̂² = 0 with ddof 0, undefined with ddof 1): every pair
    touching it is non-positive; all singletons → no debiased value at all (n = 0), never NaN."""
    M, var, _ = adversarial(12, 4, seed=3)
    ones = torch.ones(12, dtype=torch.int64)
    got = pairwise_torch(M, var, counts=ones, block=5)
    assert got.cdnv_debiased.n == 0 and got.nonpositive == got.cdnv.n
    n = ones.clone()
    n[0] = n[1] = 50
    got = pairwise_torch(M, var, counts=n, block=5)
    want = pairwise_naive(M, var, counts=n)
    assert got.cdnv_debiased.n == want.cdnv_debiased.n == 1
    s2 = var[:2] * 50 / 49
    d2 = float(((M[0] - M[1]) ** 2).sum())
    assert got.cdnv_debiased.mean == pytest.approx(float(s2.sum()) / (2 * (d2 - float(s2.sum()) / 50)), rel=1e-12)


def test_exact_values_of_two_classes():
    """Two classes written out: s² = σ̂² n/(n − 1), a = s²/n, value (s²_0 + s²_1)/(2 (d² − a_0 − a_1))."""
    M = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    var = torch.tensor([0.9, 0.4], dtype=F64)
    n = torch.tensor([10, 5])
    s2 = torch.tensor([1.0, 0.5], dtype=F64)
    want = float(s2.sum()) / (2 * (4.0 - 0.1 - 0.1))
    got = pairwise_torch(M, var, counts=n)
    assert got.cdnv_debiased.mean == pytest.approx(want, rel=1e-14) and got.nonpositive == 0
    # a correction larger than the distance: counted, excluded, no value
    got = pairwise_torch(M, var * 100, counts=n)
    assert got.cdnv_debiased.n == 0 and got.nonpositive == 1 and math.isfinite(got.cdnv.mean)
    # a corrected distance of exactly +0 (d² = 4 = a_0 + a_1 = 2 + 2): non-positive, no inf
    got = pairwise_torch(M, torch.tensor([2.0, 2.0], dtype=F64), counts=torch.tensor([2, 2]))
    assert got.cdnv_debiased.n == 0 and got.nonpositive == 1
