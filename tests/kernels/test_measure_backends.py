"""measure_embeddings(..., backend="triton") gives the same canonical keys as backend="torch"."""

from __future__ import annotations

import math

import pytest
import torch

from lcfast.metrics.embeddings import measure_embeddings


def _data(device, seed=0, N=360, V=140, d=24, C=48):
    g = torch.Generator().manual_seed(seed)
    p = 1.0 / torch.arange(1, C + 1, dtype=torch.float64) ** 1.2
    Y = torch.multinomial(p / p.sum(), N, replacement=True, generator=g)  # Zipf: many rare classes
    mu = torch.randn(C, d, generator=g) * 2
    H = mu[Y] + torch.randn(N, d, generator=g)
    H[Y == 5] = mu[5]  # a class with zero variance
    W = torch.randn(C, d, generator=g)
    b = torch.randn(C, generator=g) * 0.1
    Yv = torch.multinomial(p / p.sum(), V, replacement=True, generator=g)
    Hv = mu[Yv] + torch.randn(V, d, generator=g)
    return [t.to(device) for t in (H, Y, W, b, Hv, Yv)]


@pytest.mark.parametrize("min_count,power", [(1, 1.0), (3, 2.0)])
def test_triton_and_torch_backends_agree(device, monkeypatch, min_count, power):
    import lcfast.kernels.class_stats as kc
    import lcfast.kernels.ncc as kn
    import lcfast.kernels.pairwise as kp

    calls = []
    for mod, name in ((kc, "class_stats_triton"), (kp, "pairwise_triton"), (kn, "ncc_triton")):
        orig = getattr(mod, name)

        def spy(*a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(*a, **k)

        monkeypatch.setattr(mod, name, spy)
    H, Y, W, b, Hv, Yv = _data(device)
    kw = dict(W=W, b=b, H_val=Hv, Y_val=Yv, min_count=min_count, cdnv_power=power)
    tri = measure_embeddings(H, Y, backend="triton", **kw)
    assert {"class_stats_triton", "pairwise_triton", "ncc_triton"} <= set(calls)  # the kernels ran
    ref = measure_embeddings(H.cpu(), Y.cpu(), W=W.cpu(), b=b.cpu(), H_val=Hv.cpu(), Y_val=Yv.cpu(),
                             min_count=min_count, cdnv_power=power, backend="torch")
    assert set(tri) == set(ref)
    for k, v in ref.items():
        t = tri[k]
        if v is None:
            assert t is None, k
        elif isinstance(v, int) and not isinstance(v, bool):
            assert t == v, k
        else:
            assert t is not None and math.isfinite(t), k
            assert t == pytest.approx(v, rel=1e-5, abs=1e-9), k
    assert ref["n_classes"] < 48 and ref["nc4_agreement"] is not None


@pytest.mark.parametrize("min_count", [1, 3])
def test_paper_profile_triton_and_torch_agree(device, min_count):
    """profile="paper" through the kernels (raw-dot moment in the sweep, all-class NC4 search)
    equals the torch path, which tests/metrics/test_paper_profile.py checks against the brute force."""
    H, Y, W, b, Hv, Yv = _data(device, seed=1)
    Hv[:6] = 0.01 * Hv[:6]  # near the origin, where the unseen classes' means sit
    kw = dict(W=W, b=b, H_val=Hv, Y_val=Yv, min_count=min_count, profile="paper")
    tri = measure_embeddings(H, Y, backend="triton", **kw)
    ref = measure_embeddings(H.cpu(), Y.cpu(), W=W.cpu(), b=b.cpu(), H_val=Hv.cpu(), Y_val=Yv.cpu(),
                             min_count=min_count, profile="paper", backend="torch")
    assert list(tri) == list(ref)
    for k, v in ref.items():
        if k.endswith("_se"):  # one fold: no standard error
            assert v is None and tri[k] is None, k
            continue
        assert v is not None, k
        if isinstance(v, int):
            assert tri[k] == v, k
        else:
            assert tri[k] == pytest.approx(v, rel=1e-5, abs=1e-9), k
