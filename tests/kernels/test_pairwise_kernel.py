"""pairwise_triton against the float64 brute force (naive full C×C grid) and the torch twin."""

from __future__ import annotations

import math

import pytest
import torch

from lcfast.backend import PairwiseSums
from lcfast.errors import UsageError
from lcfast.kernels.pairwise import pairwise_triton, tile_table
from lcfast.stats.naive import pairwise_naive
from lcfast.stats.pairwise import pairwise_torch

from helpers import assert_close

F64 = torch.float64


def centred(C, d, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(C, d, generator=g, dtype=F64) * scale
    var = torch.rand(C, generator=g, dtype=F64) + 0.1
    return M - M.mean(0), var


def assert_sums_close(got: PairwiseSums, want: PairwiseSums, rtol: float, check_rows: bool = True):
    assert got.n_classes == want.n_classes
    assert got.degenerate == want.degenerate
    for name in ("cdnv", "cos", "logk"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.n == b.n, name
        if b.n:
            assert_close(a.mean, b.mean, rtol=rtol, atol=rtol * 1e-2, what=f"{name} mean")
            assert_close(a.m2, b.m2, rtol=10 * rtol, atol=1e-12, what=f"{name} m2")
    for name in ("gram_sum", "gram_sq_sum", "gram_trace"):
        assert_close(getattr(got, name), getattr(want, name), rtol=1e-6, atol=1e-8 * max(1.0, want.gram_trace),
                     what=name)
    if check_rows:
        assert_close(got.row_count, want.row_count.to(torch.int64), what="row_count")
        assert_close(got.row_cdnv_sum, want.row_cdnv_sum.to(F64), rtol=rtol, atol=1e-9, what="row_cdnv_sum")
        assert_close(got.row_cos_sum, want.row_cos_sum.to(F64), rtol=rtol, atol=rtol, what="row_cos_sum")


@pytest.mark.parametrize("power", [1.0, 2.0, 1.5])
def test_random_ragged_matches_naive_and_twin(device, power):
    M, var = centred(70, 37, seed=power.__hash__() % 97)  # C, d: not multiples of the tile
    want = pairwise_naive(M, var, cdnv_power=power)
    got = pairwise_triton(M.to(device), var.to(device), cdnv_power=power, block=32)
    assert_sums_close(got, want, rtol=2e-5)
    twin = pairwise_torch(M, var, cdnv_power=power, block=16)
    assert_sums_close(got, twin, rtol=2e-5)


@pytest.mark.parametrize("block", [16, 128])  # 128: flagged tiles are redone as 64-wide sub-tiles
def test_degenerate_pairs_match_the_twin_rule(device, block):
    """Duplicate means, a zero (centred) mean, parallel means and a near-duplicate that is *not*
    degenerate for the twin: all classified exactly like the float64 brute force."""
    M, var = centred(45, 24, seed=5)
    M[3] = M[17]             # duplicate → degenerate
    M[30] = M[17]            # a third copy: pairs (3,17), (3,30), (17,30)
    M[8] = 0.0               # zero norm: every pair touching it is degenerate
    M[21] = 2.5 * M[22]      # equal directions: ‖m̂ − m̂′‖ = 0
    M[40] = M[41] * (1 + 1e-9)  # close but parallel as well (cos = 1)
    M[12] = M[13] + 1e-5 * M[13].norm() / math.sqrt(24)  # near-duplicate (d² ≈ 1e-10 rel): NOT degenerate
    info = {}
    got = pairwise_triton(M.to(device), var.to(device), block=block, info=info)
    want = pairwise_naive(M, var)
    assert want.degenerate == 3 + 44 + 1 + 1
    assert got.degenerate == want.degenerate
    assert info["refined_tiles"] >= 1 and info["flagged_pairs"] >= 6
    # near-duplicate pair survives with its (huge) CDNV computed from the exact distance
    assert_sums_close(got, want, rtol=1e-6)
    assert_sums_close(got, pairwise_torch(M, var, block=16), rtol=1e-6)


@pytest.mark.parametrize("C", [1, 2])
def test_one_and_two_classes(device, C):
    M, var = centred(C, 20, seed=7)
    got = pairwise_triton(M.to(device), var.to(device))
    want = pairwise_naive(M, var)
    assert got.cdnv.n == want.cdnv.n == C * (C - 1) // 2
    assert_sums_close(got, want, rtol=1e-6)


def test_two_identical_classes_all_degenerate(device):
    M = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=F64)
    got = pairwise_triton(M.to(device), torch.ones(2, dtype=F64, device=device))
    assert got.degenerate == 1 and got.cdnv.n == 0
    assert got.row_count.tolist() == [0, 0]


def test_fewer_classes_than_dims_uses_the_sweep_gram(device):
    M, var = centred(20, 70, seed=9)  # C < d: ΣG² comes from the kernel's partial sums
    got = pairwise_triton(M.to(device), var.to(device), block=16)
    want = pairwise_naive(M, var)
    assert got.gram_sq_sum == pytest.approx(want.gram_sq_sum, rel=1e-6)
    assert_sums_close(got, want, rtol=2e-5)


@pytest.mark.parametrize("precision,rtol", [("tf32", 5e-3), ("bf16", 3e-2)])
def test_reduced_precision_modes(device, precision, rtol):
    M, var = centred(50, 40, seed=11)
    M[4] = M[9]
    want = pairwise_naive(M, var)
    got = pairwise_triton(M.to(device), var.to(device), precision=precision, block=16)
    assert got.degenerate == want.degenerate
    assert got.cdnv.n == want.cdnv.n
    assert got.cdnv.mean == pytest.approx(want.cdnv.mean, rel=rtol)
    assert got.cos.mean == pytest.approx(want.cos.mean, abs=rtol)
    assert got.logk.mean == pytest.approx(want.logk.mean, rel=rtol)
    assert got.cos.var == pytest.approx(want.cos.var, rel=10 * rtol)


def test_tile_table_covers_upper_triangle_once():
    for n, g in [(1, 8), (5, 2), (9, 4), (7, 8)]:
        t = tile_table(n, g)
        pairs = {(int(a), int(b)) for a, b in t}
        assert len(pairs) == t.shape[0] == n * (n + 1) // 2
        assert all(a <= b < n for a, b in pairs)


def test_bad_inputs(device):
    M, var = centred(5, 4, seed=1)
    with pytest.raises(UsageError):
        pairwise_triton(M.to(device), var[:4].to(device))
    with pytest.raises(UsageError):
        pairwise_triton(M.to(device), var.to(device), precision="fp8")
    with pytest.raises(UsageError):
        pairwise_triton(M.to(device), var.to(device), block=24)


# ---------------------------------------------------------------------------------------------
# raw dot products (the paper profile's interference): every pair, degenerate ones included
# ---------------------------------------------------------------------------------------------


def assert_dots_close(got, want, rtol):
    assert got.dot is not None and want.dot is not None
    assert got.dot.n == want.dot.n
    if want.dot.n:
        scale = abs(want.dot.mean) + math.sqrt(want.dot.var)
        assert_close(got.dot.mean, want.dot.mean, rtol=rtol, atol=rtol * scale, what="dot mean")
        assert_close(got.dot.m2, want.dot.m2, rtol=10 * rtol, atol=1e-12, what="dot m2")


@pytest.mark.parametrize("block", [16, 32])
def test_raw_dot_products_match_naive_and_twin(device, block):
    M, var = centred(70, 37, seed=21)
    M[3] = M[17]             # duplicate: degenerate, yet its dot product counts
    M[8] = 0.0               # zero norm (after centring below: tiny but nonzero, still "zero")
    M[21] = 2.5 * M[22]
    want = pairwise_naive(M, var, cdnv_power=2.0, raw_dot=True)
    assert want.dot.n == 70 * 69 // 2 and want.degenerate > 0
    got = pairwise_triton(M.to(device), var.to(device), cdnv_power=2.0, block=block, raw_dot=True)
    assert_dots_close(got, want, rtol=2e-6)
    assert_sums_close(got, want, rtol=2e-5)  # the other moments are unchanged by the extra one
    twin = pairwise_torch(M, var, cdnv_power=2.0, block=block, raw_dot=True)
    assert_dots_close(twin, want, rtol=1e-12)
    # without raw_dot nothing is computed
    assert pairwise_triton(M.to(device), var.to(device), block=block).dot is None


@pytest.mark.parametrize("C", [1, 2, 3])
def test_raw_dot_products_tiny(device, C):
    M, var = centred(C, 5, seed=C)
    want = pairwise_naive(M, var, raw_dot=True)
    got = pairwise_triton(M.to(device), var.to(device), raw_dot=True)
    assert_dots_close(got, want, rtol=2e-6)
    assert_dots_close(pairwise_torch(M, var, raw_dot=True), want, rtol=1e-12)


@pytest.mark.parametrize("power", [1.0, 2.0])
@pytest.mark.parametrize("block", [16, 128])  # 128: the duplicate's tile is redone in phase 2
def test_debiased_cdnv_matches_naive_and_twin(device, power, block):
    """The debiased CDNV columns on adversarial input: singleton classes, a duplicate pair
    (degenerate), a near pair and large variances (corrected distance ≤ 0: counted, excluded)."""
    M, var = centred(40, 6, seed=11)
    M[3] = M[17]
    M[7] = M[8] + 1e-3
    M -= M.mean(0)
    var = var * 3
    n = torch.randint(1, 6, (40,), generator=torch.Generator().manual_seed(2))
    want = pairwise_naive(M, var, cdnv_power=power, counts=n)
    twin = pairwise_torch(M, var, cdnv_power=power, block=16, counts=n)
    got = pairwise_triton(M.to(device), var.to(device), cdnv_power=power, block=block, counts=n.to(device))
    for ref in (want, twin):
        assert got.degenerate == ref.degenerate == 1
        assert got.nonpositive == ref.nonpositive > 0
        assert got.cdnv_debiased.n == ref.cdnv_debiased.n > 0
        # fp32 Gram entries: the rounding of d² (≈ √d·2⁻²⁴·(‖m_c‖² + ‖m_c′‖²)) is amplified by
        # (‖m_c‖² + ‖m_c′‖²)/(d² − a_c − a_c′) in a pair whose correction nearly cancels its
        # distance (here up to ~300×): looser than the plain CDNV's 2e-5
        assert got.cdnv_debiased.mean == pytest.approx(ref.cdnv_debiased.mean, rel=5e-4)
    assert pairwise_triton(M.to(device), var.to(device), block=block).cdnv_debiased is None
