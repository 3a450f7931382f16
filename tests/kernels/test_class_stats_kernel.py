"""class_stats_triton against float64 brute force (one-hot) and the torch twin class_stats_torch."""

from __future__ import annotations

import pytest
import torch

from lcfast.errors import DataError, UsageError
from lcfast.kernels.class_stats import atomic_profile, class_stats_triton
from lcfast.stats.classstats import class_stats_torch

from helpers import assert_close

F64 = torch.float64


def brute(H, Y, C, shift=None, centers=None):
    """Float64 one-hot reference, written independently of both implementations."""
    H = H.to(F64).cpu()
    Y = Y.cpu().long()
    oh = torch.zeros(H.shape[0], C, dtype=F64)
    oh[torch.arange(H.shape[0]), Y] = 1.0
    if shift is None:
        X = H
    elif shift.dim() == 1:
        X = H - shift.to(F64).cpu()
    else:
        X = H - shift.to(F64).cpu()[Y]
    Dv = X if centers is None else H - centers.to(F64).cpu()[Y]
    return oh.sum(0), oh.T @ X, oh.T @ (Dv * Dv).sum(1)


def zipf_labels(B, C, s=1.1, gen=None):
    p = 1.0 / torch.arange(1, C + 1, dtype=F64) ** s
    return torch.multinomial(p / p.sum(), B, replacement=True, generator=gen)


def assert_close3(got, want, rtol=1e-12, atol=1e-9):
    for g, w, name in zip(got, want, ("counts", "sums", "sqsums")):
        assert g.dtype == F64, name
        assert_close(g, w.to(F64), rtol=rtol, atol=atol, what=name)


@pytest.mark.parametrize("strategy", ["segmented", "atomic"])
@pytest.mark.parametrize(
    "dtype,mode",
    [(torch.float32, "plain"), (torch.bfloat16, "shift_vec"), (torch.float16, "shift_cls"), (torch.float32, "centers")],
)
def test_matches_bruteforce_and_twin(device, strategy, dtype, mode):
    g = torch.Generator().manual_seed(1)
    B, d, C = 211, 45, 19  # ragged: none a multiple of a block
    H = (torch.randn(B, d, generator=g) * 3 + 5).to(dtype)
    Y = zipf_labels(B, C, gen=g)
    Y[:90] = 4  # one class takes ~half the rows: runs cross several row blocks
    Y[Y == 7] = 8  # class 7 empty
    shift = centers = None
    if mode == "shift_vec":
        shift = torch.randn(d, generator=g, dtype=F64)
    elif mode == "shift_cls":
        shift = torch.randn(C, d, generator=g, dtype=F64)
    elif mode == "centers":
        shift = torch.randn(d, generator=g, dtype=F64)
        centers = torch.randn(C, d, generator=g, dtype=F64)
    args = (H.to(device), Y.to(device), C)
    kw = dict(shift=None if shift is None else shift.to(device),
              centers=None if centers is None else centers.to(device))
    got = class_stats_triton(*args, **kw, strategy=strategy, block_rows=32)
    want = brute(H, Y, C, shift, centers)
    assert_close3(got, want)
    twin = class_stats_torch(H, Y, C, shift=shift, centers=centers)
    assert_close3(got, twin)
    assert float(got[0][7]) == 0.0 and float(got[1][7].abs().sum()) == 0.0


@pytest.mark.parametrize("C", [1, 2])
def test_tiny_class_counts(device, C):
    g = torch.Generator().manual_seed(2)
    B, d = 37, 19
    H = torch.randn(B, d, generator=g)
    Y = torch.randint(0, C, (B,), generator=g)
    got = class_stats_triton(H.to(device), Y.to(device), C)
    assert_close3(got, brute(H, Y, C))


@pytest.mark.parametrize("block_rows", [16, 64])
def test_skewed_labels_many_blocks(device, block_rows):
    """Zipf labels over a larger vocabulary, most classes empty; block boundaries inside runs."""
    g = torch.Generator().manual_seed(3)
    B, d, C = 700, 24, 300
    H = torch.randn(B, d, generator=g).to(torch.bfloat16)
    Y = zipf_labels(B, C, s=1.3, gen=g)
    got = class_stats_triton(H.to(device), Y.to(device), C, block_rows=block_rows, block_d=16)
    assert_close3(got, brute(H, Y, C))
    assert int((got[0] == 0).sum()) > 0  # empty classes present and exactly zero


def test_out_accumulates_across_batches(device):
    g = torch.Generator().manual_seed(4)
    d, C = 33, 11
    H1, H2 = torch.randn(50, d, generator=g), torch.randn(77, d, generator=g)
    Y1, Y2 = torch.randint(0, C, (50,), generator=g), torch.randint(0, C, (77,), generator=g)
    shift = torch.randn(d, generator=g, dtype=F64)
    out = (torch.zeros(C, dtype=F64, device=device), torch.zeros(C, d, dtype=F64, device=device),
           torch.zeros(C, dtype=F64, device=device))
    r1 = class_stats_triton(H1.to(device), Y1.to(device), C, shift=shift.to(device), out=out)
    r2 = class_stats_triton(H2.to(device), Y2.to(device), C, shift=shift.to(device), out=out)
    assert r1[1] is out[1] and r2[1] is out[1]
    assert_close3(out, brute(torch.cat([H1, H2]), torch.cat([Y1, Y2]), C, shift))


def test_empty_batch_and_int32_labels(device):
    d, C = 8, 5
    got = class_stats_triton(torch.zeros(0, d, device=device), torch.zeros(0, dtype=torch.long, device=device), C)
    assert all(float(t.abs().sum()) == 0 for t in got)
    H = torch.arange(12.0).reshape(4, 3)
    Y = torch.tensor([2, 0, 2, 2], dtype=torch.int32)
    c, s, q = class_stats_triton(H.to(device), Y.to(device), 3)
    assert c.cpu().tolist() == [1.0, 0.0, 3.0]
    assert s.cpu()[2].tolist() == [0 + 6 + 9.0, 1 + 7 + 10.0, 2 + 8 + 11.0]
    assert float(q[0]) == 9 + 16 + 25


def test_bad_inputs(device):
    H = torch.randn(6, 4, device=device)
    with pytest.raises(DataError):
        class_stats_triton(H, torch.tensor([0, 1, 2, 3, 4, 9], device=device), 5)
    with pytest.raises(DataError):
        class_stats_triton(H, torch.tensor([0, 1, -1, 3, 4, 0], device=device), 5)
    with pytest.raises(UsageError):
        class_stats_triton(H, torch.zeros(5, dtype=torch.long, device=device), 5)
    with pytest.raises(UsageError):
        class_stats_triton(H, torch.zeros(6, device=device), 5)  # float labels
    with pytest.raises(UsageError):
        class_stats_triton(H, torch.zeros(6, dtype=torch.long, device=device), 5, shift=torch.zeros(3, device=device))
    with pytest.raises(UsageError):
        class_stats_triton(H, torch.zeros(6, dtype=torch.long, device=device), 5, strategy="magic")


def test_cpu_without_interpreter_is_a_usage_error(monkeypatch):
    from lcfast.kernels import _common

    monkeypatch.setattr(_common, "INTERPRET", False)
    with pytest.raises(UsageError, match="TRITON_INTERPRET"):
        class_stats_triton(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), 2)


def test_atomic_profile_bounds_contention():
    # 1000 rows of class 0, then 24 singletons: per-row atomics put 1000 on one address
    Y = torch.cat([torch.zeros(1000, dtype=torch.long), torch.arange(1, 25)])
    prof = atomic_profile(Y, 25, block_rows=64)
    assert prof["atomic"] == {"atomics": 1024, "max_per_address": 1000}
    # class 0 spans blocks 0..15 (rows 0..999): one end atomic per block it touches (16), no
    # start atomics (each of its runs opens its block); 24 singletons: one atomic each
    assert prof["segmented"]["max_per_address"] == 16
    assert prof["segmented"]["atomics"] == 16 + 24
    Yz = zipf_labels(20000, 5000, s=1.1, gen=torch.Generator().manual_seed(0))
    pz = atomic_profile(Yz, 5000)
    n0 = int(torch.bincount(Yz).max())
    assert pz["atomic"]["max_per_address"] == n0
    assert pz["segmented"]["max_per_address"] <= 2 * (n0 // 64 + 2)
