"""ClassStats and its torch primitive: exactness against one-hot / two-pass references, precision
with large offsets, merge / all_reduce associativity, persistence, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lcfast.backend import resolve_backend
from lcfast.errors import DataError, UsageError
from lcfast.stats.classstats import ClassStats, class_stats_torch
from lcfast.stats.naive import class_stats_naive, two_pass_naive

from helpers import assert_close

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0, C=23, d=7, N=600, offset=0.0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    p = torch.distributions.Dirichlet(torch.full((C,), 0.4)).sample()  # imbalanced
    Y = torch.multinomial(p, N, replacement=True, generator=g)
    mu = torch.randn(C, d, generator=g, dtype=F64) * 3 + offset
    H = mu[Y] + torch.randn(N, d, generator=g, dtype=F64)
    return H.to(dtype), Y


# ---------------------------------------------------------------------------------------------
# primitive


@pytest.mark.parametrize("shift_kind", [None, "vec", "perclass"])
@pytest.mark.parametrize("with_centers", [False, True])
def test_primitive_matches_one_hot(shift_kind, with_centers):
    H, Y = _data(1)
    C, d = 23, H.shape[1]
    g = torch.Generator().manual_seed(5)
    shift = {None: None, "vec": torch.randn(d, generator=g, dtype=F64),
             "perclass": torch.randn(C, d, generator=g, dtype=F64)}[shift_kind]
    centers = torch.randn(C, d, generator=g, dtype=F64) if with_centers else None
    got = class_stats_torch(H, Y, C, shift, centers)
    ref = class_stats_naive(H, Y, C, shift, centers)
    for a, b in zip(got, ref):
        assert a.dtype == F64
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-10)
    # out= accumulates
    out = class_stats_torch(H, Y, C, shift, centers)
    class_stats_torch(H, Y, C, shift, centers, out=out)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, 2 * b, rtol=1e-13, atol=1e-10)


def test_primitive_float32_input_is_converted_exactly():
    H, Y = _data(2)
    H32 = H.float()
    got = class_stats_torch(H32, Y, 23)
    ref = class_stats_naive(H32.double(), Y, 23)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-10)


def test_primitive_bad_input():
    H, Y = _data(3)
    with pytest.raises(DataError, match="labels must lie"):
        class_stats_torch(H, Y, 5)
    with pytest.raises(UsageError):
        class_stats_torch(H, Y[:-1], 23)
    with pytest.raises(UsageError):
        class_stats_torch(H, Y, 23, shift=torch.zeros(3))
    empty = class_stats_torch(H[:0], Y[:0], 23)
    assert all(float(t.abs().sum()) == 0 for t in empty)


# ---------------------------------------------------------------------------------------------
# accumulator vs references


@pytest.mark.parametrize("seed", [0, 1])
def test_update_in_pieces_equals_two_pass_reference(seed):
    H, Y = _data(seed, N=900)
    n, mu, var, cov = two_pass_naive(H, Y, 23)
    st = ClassStats(23, H.shape[1], covariance=True)
    g = torch.Generator().manual_seed(seed)
    cuts = sorted(torch.randint(1, 900, (6,), generator=g).tolist())
    for a, b in zip([0] + cuts, cuts + [900]):
        st.update(H[a:b], Y[a:b], backend="torch")
    assert torch.equal(st.counts, n.to(torch.int64))
    torch.testing.assert_close(st.means, mu, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(st.variances, var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.covariance, cov, rtol=1e-12, atol=1e-12)
    assert st.n_samples == 900


def test_one_pass_matches_two_pass_with_large_offsets():
    """Where the textbook one-pass formula fails, and how ClassStats avoids it.

    Data: features with a common offset of 1e6 and per-class offsets of 1e3 around it, σ = 1, so
    ‖μ_c‖²/σ² ≈ 1e13. The textbook one-pass σ² = Σ‖h‖²/n − ‖μ‖² subtracts two numbers of size
    ~1e13 and keeps ~3 significant digits (checked below: relative error > 1e-6). ClassStats
    accumulates about a per-class reference r_c (the class's first sample) — S1 = Σ(h − r_c),
    S2 = Σ‖h − r_c‖² — so σ² = S2/n − ‖S1/n‖² subtracts numbers of size σ² only. It agrees with
    the exact two-pass mode (`ClassStats.second_pass`) and with an 80-bit (np.longdouble) two-pass
    truth to float64 rounding. Observed (max relative error of σ²_c): ClassStats 2e-15, two-pass
    7e-16, textbook one-pass 1.3e-3, and — for comparison — a single *global* shift (first sample
    of the stream) 4e-9: the per-class offsets of 1e3 still cancel, which is why the reference is
    per class."""
    g = torch.Generator().manual_seed(7)
    C, d, N = 9, 5, 3000
    Y = torch.randint(0, C, (N,), generator=g)
    mu = 1e6 + 1e3 * torch.randn(C, d, generator=g, dtype=F64)
    H = mu[Y] + torch.randn(N, d, generator=g, dtype=F64)

    one = ClassStats(C, d)
    for i in range(0, N, 500):
        one.update(H[i : i + 500], Y[i : i + 500], backend="torch")
    two = ClassStats.second_pass(one.means)
    for i in range(0, N, 700):
        two.update(H[i : i + 700], Y[i : i + 700], backend="torch")

    # 80-bit truth
    Hn, Yn = H.numpy().astype(np.longdouble), Y.numpy()
    truth = np.zeros(C, dtype=np.longdouble)
    for c in range(C):
        x = Hn[Yn == c]
        m = x.mean(0)
        truth[c] = ((x - m) ** 2).sum(1).mean()
    truth = torch.tensor(truth.astype(np.float64))

    rel = lambda v: float(((v - truth).abs() / truth).max())  # noqa: E731
    assert rel(one.variances) < 1e-13
    assert rel(two.variances) < 1e-13
    torch.testing.assert_close(one.variances, two.variances, rtol=1e-13, atol=0)

    # the unguarded formula on the same data really does lose precision (so the test can fail)
    s1, s2 = torch.zeros(C, d, dtype=F64), torch.zeros(C, dtype=F64)
    n = torch.bincount(Y, minlength=C).to(F64)
    s1.index_add_(0, Y, H)
    s2.index_add_(0, Y, (H * H).sum(1))
    textbook = s2 / n - ((s1 / n[:, None]) ** 2).sum(1)
    assert rel(textbook) > 1e-6


def test_float32_inputs_vs_float64_reference():
    """float32 features: the conversion to float64 is exact, so ClassStats of the float32 tensor
    equals the float64 reference computed on the same (rounded) values to ~1e-15. Against the
    *unrounded* float64 data the difference is the input rounding itself: observed 2.4e-8 relative
    on the means and 1.6e-7 on σ² (‖μ‖/σ ≈ 3-5 here; it grows like eps32·‖μ‖/σ, eps32 = 6e-8).
    Same-values agreement observed: 1.3e-15."""
    H, Y = _data(4, N=800)
    st32 = ClassStats(23, H.shape[1]).update(H.float(), Y, backend="torch")
    n, mu, var, _ = two_pass_naive(H.float().double(), Y, 23)
    seen = n > 0
    torch.testing.assert_close(st32.variances[seen], var[seen], rtol=1e-12, atol=1e-13)
    _, mu64, var64, _ = two_pass_naive(H, Y, 23)
    rel_var = float(((st32.variances[seen] - var64[seen]).abs() / var64[seen].clamp_min(1e-300)).max())
    rel_mu = float(((st32.means - mu64).norm(dim=1)[seen] / mu64.norm(dim=1)[seen]).max())
    assert 1e-10 < rel_var < 1e-5
    assert rel_mu < 1e-6


def test_bfloat16_and_half_inputs_accepted():
    H, Y = _data(5)
    for dt in (torch.bfloat16, torch.float16):
        st = ClassStats(23, H.shape[1]).update(H.to(dt), Y, backend="torch")
        _, mu, var, _ = two_pass_naive(H.to(dt).double(), Y, 23)
        torch.testing.assert_close(st.means, mu, rtol=1e-12, atol=1e-12)


def test_second_pass_covariance_matches_naive():
    H, Y = _data(6)
    n, mu, var, cov = two_pass_naive(H, Y, 23)
    st = ClassStats.second_pass(mu, covariance=True)
    st.update(H[:250], Y[:250], backend="torch").update(H[250:], Y[250:], backend="torch")
    torch.testing.assert_close(st.variances, var, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.covariance, cov, rtol=1e-12, atol=1e-12)
    assert st.pass_kind == "two-pass" and "means_fingerprint" in st.meta


def test_cov_classes_restricts_covariance():
    H, Y = _data(7)
    mask = torch.zeros(23, dtype=torch.bool)
    mask[::2] = True
    st = ClassStats(23, H.shape[1], covariance=True, cov_classes=mask).update(H, Y, backend="torch")
    sel = mask[Y]
    _, _, _, cov = two_pass_naive(H[sel], Y[sel], 23)
    torch.testing.assert_close(st.covariance, cov, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# merge / all_reduce


def _parts(H, Y, cuts, cov=True):
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        out.append(ClassStats(23, H.shape[1], covariance=cov).update(H[a:b], Y[a:b], backend="torch"))
    return out


def _assert_same(a: ClassStats, b: ClassStats, rtol=1e-12):
    assert torch.equal(a.counts, b.counts)
    assert_close(a.means, b.means, rtol=rtol, what="means")
    assert_close(a.variances, b.variances, rtol=rtol, what="variances")
    if a.covariance is not None:
        assert_close(a.covariance, b.covariance, rtol=rtol, what="covariance")


def test_merge_is_associative_and_equals_one_accumulation():
    H, Y = _data(8, N=900, offset=50.0)
    whole = ClassStats(23, H.shape[1], covariance=True).update(H, Y, backend="torch")
    a, b, c = _parts(H, Y, [0, 200, 610, 900])
    left = a.copy().merge(b).merge(c)
    right = a.copy().merge(b.copy().merge(c))
    rev = c.copy().merge(b).merge(a)
    for m in (left, right, rev):
        _assert_same(m, whole)


def test_merge_rejects_incompatible():
    a = ClassStats(5, 3)
    with pytest.raises(DataError):
        a.merge(ClassStats(6, 3))
    with pytest.raises(DataError):
        a.merge(ClassStats(5, 3, covariance=True))


def _ar_worker(rank, world, path, H, Y, cuts, out):
    import torch.distributed as dist

    from lcfast.dist import close

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world)
    try:
        st = ClassStats(23, H.shape[1], covariance=True)
        st.update(H[cuts[rank] : cuts[rank + 1]], Y[cuts[rank] : cuts[rank + 1]], backend="torch")
        st.all_reduce()
        st.save(f"{out}.{rank}")
    except BaseException:
        close(ok=False)
        raise
    close()  # (not destroy_process_group alone: its destructor can hang at torch 2.4, lcfast.dist)


def test_all_reduce_two_processes_equals_single(tmp_path):
    """2 ranks over gloo (torch.multiprocessing.spawn): every rank ends equal to the one-process
    accumulation of all samples."""
    import torch.multiprocessing as mp

    H, Y = _data(9, N=500, offset=20.0)
    cuts = [0, 230, 500]
    out = str(tmp_path / "st")
    mp.spawn(_ar_worker, args=(2, str(tmp_path / "rdv"), H, Y, cuts, out), nprocs=2, join=True)
    whole = ClassStats(23, H.shape[1], covariance=True).update(H, Y, backend="torch")
    for r in range(2):
        _assert_same(ClassStats.load(f"{out}.{r}"), whole)


def test_all_reduce_needs_process_group():
    with pytest.raises(UsageError, match="torch.distributed"):
        ClassStats(3, 2).all_reduce()


# ---------------------------------------------------------------------------------------------
# persistence


def test_save_load_roundtrip_and_resume(tmp_path):
    H, Y = _data(10, N=600)
    full = ClassStats(23, H.shape[1], covariance=True).update(H, Y, backend="torch")
    part = ClassStats(23, H.shape[1], covariance=True).update(H[:333], Y[:333], backend="torch")
    p = tmp_path / "state.safetensors"
    part.save(p, meta={"model_fingerprint": "abc", "windows_done": 3})
    assert [f for f in os.listdir(tmp_path) if f != "state.safetensors"] == []  # temp file renamed
    back = ClassStats.load(p, expect={"model_fingerprint": "abc"})
    assert back.meta["model_fingerprint"] == "abc" and back.meta["windows_done"] == "3"
    _assert_same(back, part, rtol=0)
    back.update(H[333:], Y[333:], backend="torch")  # resume: same totals as uninterrupted
    _assert_same(back, full)
    with pytest.raises(DataError, match="model_fingerprint"):
        ClassStats.load(p, expect={"model_fingerprint": "xyz"})


def test_load_rejects_bad_files(tmp_path):
    missing = tmp_path / "none.safetensors"
    with pytest.raises(DataError, match="not found"):
        ClassStats.load(missing)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(DataError, match="junk.safetensors"):
        ClassStats.load(junk)
    st = ClassStats(4, 3).update(torch.randn(10, 3), torch.randint(0, 4, (10,)), backend="torch")
    good = tmp_path / "good.safetensors"
    st.save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) - 20])
    with pytest.raises(DataError, match="trunc.safetensors"):
        ClassStats.load(trunc)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other))
    with pytest.raises(DataError, match="not an lcfast ClassStats"):
        ClassStats.load(other)


# ---------------------------------------------------------------------------------------------
# bad input


def test_nonfinite_rows_error_or_skip():
    H, Y = _data(11, N=200)
    H[5, 2] = float("nan")
    H[17, 0] = float("inf")
    with pytest.raises(DataError, match="2 of 200"):
        ClassStats(23, H.shape[1]).update(H, Y, backend="torch")
    st = ClassStats(23, H.shape[1], nonfinite="skip").update(H, Y, backend="torch")
    ok = torch.isfinite(H).all(1)
    n, mu, var, _ = two_pass_naive(H[ok], Y[ok], 23)
    assert st.skipped == 2
    torch.testing.assert_close(st.variances, var, rtol=1e-12, atol=1e-12)


def test_update_bad_shapes_and_labels():
    st = ClassStats(5, 3)
    with pytest.raises(UsageError):
        st.update(torch.randn(4, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(UsageError):
        st.update(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(DataError, match="labels"):
        st.update(torch.randn(4, 3), torch.tensor([0, 1, 5, 2]))
    assert st.n_samples == 0


def test_backend_names():
    assert resolve_backend("auto", torch.zeros(2), family="class_stats") == "torch"
    with pytest.raises(UsageError, match="backend"):
        resolve_backend("cuda", torch.zeros(2), family="class_stats")
    if os.environ.get("TRITON_INTERPRET") != "1":  # triton on CPU tensors needs the interpreter
        with pytest.raises(UsageError):
            ClassStats(3, 2).update(torch.randn(4, 2), torch.tensor([0, 1, 2, 0]), backend="triton")
