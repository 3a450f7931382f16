"""The NC4 search's float32 products with float64 decisions (lcfast.stats.ncc, the comment above
`_Table`): on adversarial ties the decisions must be exactly those of the float64 path and of the
float64 naive twin (dense B×C matrices), and NC4 counts exact."""

from __future__ import annotations

import pytest
import torch

import lcfast.stats.ncc as ncc_mod
from lcfast.stats.naive import ncc_naive
from lcfast.stats.ncc import NCCStats, ncc_torch

F64 = torch.float64


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert torch.equal(g.cpu(), w.cpu())


def _check(H, means, kept, W, b=None, all_classes=False, **kw):
    """ncc_torch (float32 + refinement) == ncc_torch(precision='float64') == ncc_naive."""
    got = ncc_torch(H, means, kept, W, b, all_classes=all_classes, **kw)
    f64 = ncc_torch(H, means, kept, W, b, all_classes=all_classes, precision="float64", **kw)
    naive = ncc_naive(H, means, kept, W, b, all_classes=all_classes)
    _same(got, f64)
    _same(got, naive)
    return got


def _f32_only(H, means, W):
    """Decisions from float32 products alone (what the search would give without refinement)."""
    h, m, w = H.float(), means.float(), W.float()
    return ((m * m).sum(1) - 2 * h @ m.T).argmin(1), (h @ w.T).argmax(1)


def _count_refined(monkeypatch):
    seen = []
    orig = ncc_mod._f32_chunk

    def wrap(*a, **k):
        out = orig(*a, **k)
        seen.append(int(out[3].sum()))
        return out

    monkeypatch.setattr(ncc_mod, "_f32_chunk", wrap)
    return seen


def test_means_differing_below_float32_resolution(monkeypatch):
    """Pairs of means 1e-9 apart (the same float32 numbers): float32 alone ties them and picks the
    first; float64 sees which one is nearer. The refinement must give the float64 decision."""
    g = torch.Generator().manual_seed(0)
    C, d, B = 64, 48, 800
    base = torch.randn(C // 2, d, generator=g, dtype=F64)
    means = torch.cat([base, base + 1e-9 * torch.randn(C // 2, d, generator=g, dtype=F64)])
    W = torch.cat([base, base + 1e-9 * torch.randn(C // 2, d, generator=g, dtype=F64)])
    H = means[torch.randint(0, C, (B,), generator=g)] + 1e-3 * torch.randn(B, d, generator=g, dtype=F64)
    kept = torch.arange(C)
    seen = _count_refined(monkeypatch)
    got = _check(H, means, kept, W, all_classes=True, block=7, row_block=128)
    f32n, f32l = _f32_only(H, means, W)
    # the data are adversarial for float32 (otherwise this test could not fail) ...
    assert bool((f32n != got[0]).any()) and bool((f32l != got[1]).any())
    # ... and the refinement was what fixed them
    assert sum(seen) > 0


def test_exact_duplicate_means_and_logits_break_ties_to_the_lowest_index():
    g = torch.Generator().manual_seed(1)
    C, d, B = 40, 16, 500
    means = torch.randint(-4, 5, (C, d), generator=g).to(F64)
    means[7] = means[3]
    means[30] = means[3]
    means[12] = means[25]
    W = torch.randint(-3, 4, (C, d), generator=g).to(F64)
    W[9] = W[2]
    W[33] = W[2]
    b = torch.zeros(C, dtype=F64)
    H = means[torch.randint(0, C, (B,), generator=g)] + torch.randint(-1, 2, (B, d), generator=g).to(F64) / 4
    H[:100] = means[3]  # exactly on a triplicated mean
    got = _check(H, means, torch.arange(C), W, b, all_classes=True, block=5, row_block=64)
    assert bool((got[0][:100] == 3).all())
    # kept ids given out of class order: the first *kept position* wins, as before
    kept = torch.tensor([30, 7, 3] + [c for c in range(C) if c not in (3, 7, 30)])
    _check(H, means[kept], kept, W, b, block=4, row_block=50)


@pytest.mark.parametrize("scale", [1e15, 1e19])
def test_large_norms(scale):
    """1e15: float32 still holds the products (bound scales with them); 1e19: ‖h‖·‖μ‖ would overflow
    float32, so the chunk is decided in float64 whole. Decisions identical either way."""
    g = torch.Generator().manual_seed(2)
    C, d, B = 50, 24, 300
    means = scale * torch.randn(C, d, generator=g, dtype=F64)
    means[5] = means[4]
    W = torch.randn(C, d, generator=g, dtype=F64)
    b = scale * torch.randn(C, generator=g, dtype=F64)
    H = means[torch.randint(0, C, (B,), generator=g)] + 0.01 * scale * torch.randn(B, d, generator=g, dtype=F64)
    _check(H, means, torch.arange(0, C, 2), W, b, block=8)
    _check(H, means, torch.arange(0, C, 2), W, b, all_classes=True, block=8)


def test_unseen_classes_at_the_origin_tie_to_the_lower_class_id():
    """The paper's NC4: unseen classes sit at the origin (mean 0). h = μ_k / 2 is exactly as far
    from μ_k as from the origin; the lower class id wins, whether the unseen class is below or
    above k."""
    d = 8
    C = 12
    means = torch.zeros(C, d, dtype=F64)
    kept = torch.tensor([2, 5, 9])
    means[2, 0] = means[5, 1] = means[9, 2] = 10.0  # orthogonal, |μ|² = 100: |μ/2 − μ'|² = 125
    W = torch.eye(C, d, dtype=F64)
    H = torch.stack([means[2] / 2, means[5] / 2, means[9] / 2, means[9] / 2 + 0.25, torch.zeros(d, dtype=F64)])
    got = _check(H, means, kept, W, all_classes=True, block=3)
    # unseen classes 0, 1 lie below 2, so the origin (class 0) wins the exact ties
    assert got[2].tolist() == [0, 0, 0, 9, 0]
    assert got[0].tolist() == [2, 5, 9, 9, got[0][4].item()]
    # with every class below 9 kept, the only unseen ones are 10, 11: the kept class wins its tie
    kept2 = torch.arange(10)
    means2 = means.clone()
    means2[[0, 1, 3, 4, 6, 7, 8]] = torch.randn(7, d, generator=torch.Generator().manual_seed(3), dtype=F64) + 40
    got2 = _check(H, means2, kept2, W, all_classes=True, block=3)
    assert got2[2][2].item() == 9


def test_nccstats_counts_exact_on_adversarial_data(monkeypatch):
    g = torch.Generator().manual_seed(4)
    C, d, B = 60, 20, 2000
    base = torch.randn(C // 3, d, generator=g, dtype=F64)
    means = torch.cat([base, base + 1e-9 * torch.randn(C // 3, d, generator=g, dtype=F64),
                       torch.zeros(C // 3, d, dtype=F64)])
    W = means + 0.05 * torch.randn(C, d, generator=g, dtype=F64)
    Y = torch.randint(0, C, (B,), generator=g)
    H = means[Y] + 1e-4 * torch.randn(B, d, generator=g, dtype=F64)
    kept = torch.zeros(C, dtype=torch.bool)
    kept[: 2 * C // 3] = True
    st = NCCStats(C, means, kept, W, all_classes=True).update(H, Y, backend="torch")
    ids = kept.nonzero().squeeze(1)
    sel = kept[Y]
    ncc, lm, ncc_all = ncc_naive(H[sel], means, ids, W, all_classes=True)
    want_hits = torch.bincount(Y[sel], weights=(ncc == lm).to(F64), minlength=C).round().to(torch.int64)
    want_all = torch.bincount(Y[sel], weights=(ncc_all == lm).to(F64), minlength=C).round().to(torch.int64)
    assert torch.equal(st.hits, want_hits)
    assert torch.equal(st.hits_all, want_all)
    assert torch.equal(st.totals, torch.bincount(Y[sel], minlength=C))


def test_reduced_float32_matmul_precision_falls_back_to_float64(monkeypatch):
    seen = _count_refined(monkeypatch)
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        g = torch.Generator().manual_seed(5)
        means, W = torch.randn(30, 12, generator=g, dtype=F64), torch.randn(30, 12, generator=g, dtype=F64)
        H = torch.randn(100, 12, generator=g, dtype=F64)
        _check(H, means, torch.arange(30), W)
    finally:
        torch.set_float32_matmul_precision(prev)
    assert seen == []  # never took the float32 path


def test_precision_argument():
    from lcfast.errors import UsageError

    with pytest.raises(UsageError, match="precision"):
        ncc_torch(torch.zeros(2, 3), torch.zeros(4, 3), torch.arange(4), torch.zeros(4, 3), precision="float16")


def test_copies_of_a_candidate_are_searched_once(monkeypatch):
    """Many unseen classes share the origin: positions nearest to it must not all count as ties to
    recompute (they did: 10% of the paper profile's positions), and the lowest class id still wins."""
    from lcfast.stats.ncc import _first_occurrences

    t = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [3.0, 1.0], [0.0, 0.0]], dtype=F64)
    c = (t * t).sum(1)
    assert _first_occurrences(t, c).tolist() == [0, 1, 4]
    assert _first_occurrences(t[[0, 1, 4]], c[[0, 1, 4]]) is None
    # same rows, different offsets (logits with different biases) are not copies
    assert _first_occurrences(t[[0, 2]], torch.tensor([0.0, 1.0], dtype=F64)) is None
    g = torch.Generator().manual_seed(6)
    C, d, B = 80, 16, 600
    means = torch.randn(C, d, generator=g, dtype=F64) * 3
    means[40:] = 0.0  # unseen: at the origin
    W = torch.randn(C, d, generator=g, dtype=F64)
    H = 0.3 * torch.randn(B, d, generator=g, dtype=F64)  # mostly nearest to the origin
    seen = _count_refined(monkeypatch)
    got = _check(H, means, torch.arange(40), W, all_classes=True, block=16, row_block=200)
    assert bool((got[2] == 40).sum() > B // 2)  # the origin wins, as class 40 (the lowest unseen id)
    assert sum(seen) < B // 20
