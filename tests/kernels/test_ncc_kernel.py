"""ncc_triton against the float64 brute force (full B×K / B×C matrices) and the torch twin."""

from __future__ import annotations

import pytest
import torch

from lcfast.errors import UsageError
from lcfast.kernels.ncc import ncc_triton
from lcfast.stats.naive import ncc_naive
from lcfast.stats.ncc import ncc_torch

F64 = torch.float64


def problem(B, d, C, seed, kept_every=1, spread=3.0):
    """Features drawn around class means so the nearest mean is usually well separated."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, d, generator=g, dtype=F64) * spread
    W = torch.randn(C, d, generator=g, dtype=F64)
    b = torch.randn(C, generator=g, dtype=F64)
    kept = torch.arange(0, C, kept_every)
    y = kept[torch.randint(0, kept.numel(), (B,), generator=g)]
    H = means[y] + torch.randn(B, d, generator=g, dtype=F64)
    return H, means, kept, W, b


def scores(H, means, kept, W, b):
    H = H.to(F64).cpu()
    mu = means.to(F64).cpu()[kept]
    dist = torch.cdist(H, mu) ** 2
    logits = H @ W.to(F64).cpu().T + (0 if b is None else b.to(F64).cpu())
    return dist, logits


def assert_optimal(pred_ncc, pred_lm, H, means, kept, W, b, tol):
    """Each prediction attains the float64 optimum up to tol (robust to float32 near-ties)."""
    dist, logits = scores(H, means, kept, W, b)
    pos = {int(c): k for k, c in enumerate(kept)}
    k_idx = torch.tensor([pos[int(c)] for c in pred_ncc.cpu()])
    chosen = dist.gather(1, k_idx[:, None]).squeeze(1)
    assert bool((chosen <= dist.min(1).values + tol * (1 + dist.min(1).values.abs())).all())
    chosen_l = logits.gather(1, pred_lm.cpu()[:, None]).squeeze(1)
    assert bool((chosen_l >= logits.max(1).values - tol * (1 + logits.max(1).values.abs())).all())


def run(device, H, means, kept, W, b=None, **kw):
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    n, l = ncc_triton(to(H.float()), to(means), to(kept), to(W.float()), to(None if b is None else b.float()), **kw)
    assert n.dtype == torch.int64 and l.dtype == torch.int64 and n.shape == l.shape == (H.shape[0],)
    return n.cpu(), l.cpu()


@pytest.mark.parametrize("with_bias", [True, False])
def test_ragged_matches_naive_and_twin(device, with_bias):
    H, means, kept, W, b = problem(B=83, d=37, C=71, seed=1, kept_every=2)
    b = b if with_bias else None
    n, l = run(device, H, means, kept, W, b)
    rn, rl = ncc_naive(H, means, kept, W, b)
    tn, tl_ = ncc_torch(H, means, kept, W, b)
    assert torch.equal(n, rn) and torch.equal(l, rl)
    assert torch.equal(n, tn) and torch.equal(l, tl_)
    assert set(n.tolist()) <= set(kept.tolist())


def test_kept_only_means_and_bf16_features(device):
    H, means, kept, W, b = problem(B=64, d=48, C=50, seed=2, kept_every=3)
    n_full, l_full = run(device, H, means, kept, W, b)
    # K×d means (row k = class kept[k]) must give the same answer as the C×d table
    n_k, l_k = run(device, H, means[kept], kept, W, b)
    assert torch.equal(n_full, n_k) and torch.equal(l_full, l_k)
    Hb = H.to(torch.bfloat16)
    nb, lb = ncc_triton(Hb.to(device), means.to(device), kept.to(device), W.float().to(device), b.float().to(device))
    rn, rl = ncc_naive(Hb.to(F64), means, kept, W.float(), b.float())
    assert torch.equal(nb.cpu(), rn) and torch.equal(lb.cpu(), rl)


@pytest.mark.parametrize("C", [1, 2])
def test_one_and_two_classes(device, C):
    H, means, kept, W, b = problem(B=21, d=17, C=C, seed=3)
    n, l = run(device, H, means, kept, W, b)
    rn, rl = ncc_naive(H, means, kept, W, b)
    assert torch.equal(n, rn) and torch.equal(l, rl)


def test_duplicate_means_break_ties_to_the_lowest_kept_class(device):
    H, means, kept, W, b = problem(B=40, d=16, C=40, seed=4)
    means[25] = means[6]
    means[33] = means[6]
    W[30] = W[2]
    b[30] = b[2]
    H[:10] = means[6] + 0.01 * H[:10]  # rows whose nearest mean is the tied triple
    H[10:20] = W[2] * 5                # rows whose argmax is the tied pair of logits
    n, l = run(device, H, means, kept, W, b, block_c=16)
    rn, rl = ncc_torch(H.float().to(F64), means.float().to(F64), kept, W.float().to(F64), b.float().to(F64))
    assert (n[:10] == 6).all()
    assert torch.equal(n, rn)
    assert not (l == 30).any()
    assert torch.equal(l, rl)


def test_single_kept_class_and_large_vocab_tiles(device):
    H, means, kept, W, b = problem(B=33, d=20, C=130, seed=5)
    n, l = run(device, H, means, torch.tensor([77]), W, b, block_c=32, block_b=16)
    assert (n == 77).all()
    _, rl = ncc_naive(H, means, kept, W, b)
    assert torch.equal(l, rl)


@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_reduced_precision_predictions_are_near_optimal(device, precision):
    H, means, kept, W, b = problem(B=64, d=32, C=45, seed=6, kept_every=2)
    n, l = run(device, H, means, kept, W, b, precision=precision)
    assert_optimal(n, l, H, means, kept, W, b, tol=3e-2)
    rn, rl = ncc_naive(H, means, kept, W, b)
    assert float((n == rn).float().mean()) > 0.9


def test_bad_inputs(device):
    H, means, kept, W, b = problem(B=4, d=8, C=6, seed=7)
    f = lambda t: t.float().to(device)  # noqa: E731
    with pytest.raises(UsageError):
        ncc_triton(f(H), f(means), kept[:0].to(device), f(W), f(b))
    with pytest.raises(UsageError):
        ncc_triton(f(H), f(means[:, :5]), kept.to(device), f(W), f(b))
    with pytest.raises(UsageError):
        ncc_triton(f(H), f(means[:4]), kept.to(device), f(W), f(b))
    with pytest.raises(UsageError):
        ncc_triton(f(H), f(means), kept.to(device), f(W), f(b), precision="fp8")


# ---------------------------------------------------------------------------------------------
# all_classes: the nearest of all C means (the paper's NC4) from the same search
# ---------------------------------------------------------------------------------------------


def run_all(device, H, means, kept, W, b=None, **kw):
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    out = ncc_triton(to(H.float()), to(means.float()), to(kept), to(W.float()), to(None if b is None else b.float()),
                     all_classes=True, **kw)
    assert len(out) == 3 and all(t.dtype == torch.int64 and t.shape == (H.shape[0],) for t in out)
    return [t.cpu() for t in out]


@pytest.mark.parametrize("block_c", [16, 32])
def test_all_classes_matches_naive_and_twin(device, block_c):
    """Unseen classes at the origin (exact ties among them: the lowest id wins), classes that are
    not kept at their own means, rows near the origin and near a non-kept mean."""
    H, means, kept, W, b = problem(B=70, d=24, C=60, seed=8, kept_every=2)
    means[[7, 19, 41, 59]] = 0.0  # unseen in training (odd ids: not kept)
    H[:8] = 0.01 * H[:8]          # nearest of all means: the origin, i.e. class 7
    H[8:16] = means[13] + 0.05 * H[8:16]  # near a non-kept class's mean
    ref = ncc_naive(H.float().to(F64), means.float().to(F64), kept, W.float().to(F64), b.float().to(F64),
                    all_classes=True)
    got = run_all(device, H, means, kept, W, b, block_c=block_c)
    twin = ncc_torch(H, means, kept, W, b, block=13, all_classes=True)
    for r, g_, t in zip(ref, got, twin):
        assert torch.equal(g_, r) and torch.equal(t, r)
    assert (got[2][:8] == 7).all() and (got[2][8:16] == 13).all()
    assert not set(got[2].tolist()) <= set(kept.tolist())  # non-kept winners do occur
    # the kept-only decisions are the same as without all_classes
    n, l = run(device, H, means, kept, W, b, block_c=block_c)
    assert torch.equal(n, got[0]) and torch.equal(l, got[1])


def test_all_classes_when_every_class_is_kept_and_errors(device):
    H, means, kept, W, b = problem(B=9, d=8, C=12, seed=9)
    n, _, a = run_all(device, H, means, kept, W, b)
    assert torch.equal(a, n)
    with pytest.raises(UsageError):  # all_classes needs the full table, not K rows
        ncc_triton(H.float().to(device), means[kept[:5]].float().to(device), kept[:5].to(device), W.float().to(device),
                   all_classes=True)
    with pytest.raises(UsageError):
        ncc_torch(H, means[kept[:5]], kept[:5], W, all_classes=True)
