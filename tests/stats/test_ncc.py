"""NC4: blocked NCC / LM argmax against the full B×C matrices; the NCCStats accumulator."""

from __future__ import annotations

import pytest
import torch

from lcfast.errors import DataError, UsageError
from lcfast.stats.naive import ncc_naive
from lcfast.stats.ncc import NCCStats, ncc_predict, ncc_torch

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(seed=0, C=50, d=8, B=300, K_every=3):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(C, d, generator=g, dtype=F64) * 2
    kept = torch.zeros(C, dtype=torch.bool)
    kept[::K_every] = True
    W = torch.randn(C, d, generator=g, dtype=F64)
    b = torch.randn(C, generator=g, dtype=F64)
    Y = torch.randint(0, C, (B,), generator=g)
    H = means[Y] + torch.randn(B, d, generator=g, dtype=F64)
    return means, kept, W, b, H, Y


@pytest.mark.parametrize("block,row_block", [(7, 100), (16, 64), (1024, 2048)])
@pytest.mark.parametrize("bias", [False, True])
def test_ncc_matches_full_matrices(block, row_block, bias):
    means, kept, W, b, H, _ = _setup(block)
    ids = kept.nonzero().squeeze(1)
    bb = b if bias else None
    got = ncc_torch(H.float(), means[ids], ids, W, bb, block=block, row_block=row_block)
    ref = ncc_naive(H.float(), means[ids], ids, W, bb)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert got[0].dtype == torch.int64 and bool(kept[got[0]].all())
    # a full [C, d] means table is accepted too
    full = ncc_torch(H, means, ids, W, bb, block=block, row_block=row_block)
    assert torch.equal(full[0], ncc_naive(H, means, ids, W, bb)[0])
    assert torch.equal(ncc_predict(H, means[ids], ids, W, bb, backend="torch")[1], ref[1])


def test_ncc_errors():
    means, kept, W, b, H, _ = _setup()
    ids = kept.nonzero().squeeze(1)
    with pytest.raises(UsageError):
        ncc_torch(H, means[:5], ids, W)
    with pytest.raises(UsageError):
        ncc_torch(H[:, :3], means[ids], ids, W)


def test_nccstats_counts_hits_on_kept_labels_only():
    means, kept, W, b, H, Y = _setup(1)
    st = NCCStats(50, means, kept, W, b)
    st.update(H[:120], Y[:120], backend="torch").update(H[120:], Y[120:], backend="torch")
    ids = kept.nonzero().squeeze(1)
    sel = kept[Y]
    ncc, lm = ncc_naive(H[sel], means[ids], ids, W, b)
    hit = (ncc == lm).long()
    assert torch.equal(st.totals, torch.bincount(Y[sel], minlength=50))
    assert torch.equal(st.hits, torch.bincount(Y[sel], weights=hit.double(), minlength=50).long())
    assert st.agreement == pytest.approx(float(hit.double().mean()))
    assert int(st.totals[~kept].sum()) == 0


def test_nccstats_merge_save_load(tmp_path):
    means, kept, W, b, H, Y = _setup(2)
    whole = NCCStats(50, means, kept, W, b).update(H, Y, backend="torch")
    a = NCCStats(50, means, kept, W, b).update(H[:100], Y[:100], backend="torch")
    p = tmp_path / "ncc.safetensors"
    a.save(p, meta={"model_fingerprint": "m1"})
    back = NCCStats.load(p, means=means, W=W, b=b, expect={"model_fingerprint": "m1"})
    back.update(H[100:], Y[100:], backend="torch")  # resume
    assert torch.equal(back.hits, whole.hits) and torch.equal(back.totals, whole.totals)
    c = NCCStats(50, means, kept, W, b).update(H[100:], Y[100:], backend="torch")
    assert torch.equal(a.merge(c).hits, whole.hits)
    with pytest.raises(DataError, match="differ"):  # other means than the stored decisions used
        NCCStats.load(p, means=means + 1, W=W)
    other = torch.zeros(50, dtype=torch.bool)
    other[:5] = True
    with pytest.raises(DataError, match="kept"):
        whole.merge(NCCStats(50, means, other, W))


def test_nccstats_bad_input(tmp_path):
    means, kept, W, b, H, Y = _setup(3)
    st = NCCStats(50, means, kept, W, b)
    with pytest.raises(DataError, match="labels"):
        st.update(H[:3], torch.tensor([0, 1, 99]))
    bad = H[:3].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        st.update(bad, torch.tensor([0, 3, 6]))
    with pytest.raises(UsageError):
        NCCStats(50, None, kept, None).update(H, Y)
    junk = tmp_path / "x.safetensors"
    junk.write_bytes(b"nope")
    with pytest.raises(DataError, match="x.safetensors"):
        NCCStats.load(junk)
    assert NCCStats(50, means, kept, W).agreement is None


def test_ncc_all_classes_matches_full_matrix_and_breaks_ties_to_the_lowest_id():
    means, kept, W, b, H, Y = _setup(4, K_every=2)
    means[[5, 9, 13]] = 0.0  # unseen classes (not kept): exact ties at the origin
    H[:10] *= 1e-3            # rows nearest to the origin: class 5 wins the tie
    ids = kept.nonzero().squeeze(1)
    ref = ncc_naive(H, means, ids, W, b, all_classes=True)
    for block in (7, 1024):
        got = ncc_torch(H, means, ids, W, b, block=block, row_block=64, all_classes=True)
        assert all(torch.equal(g, r) for g, r in zip(got, ref))
    assert (ref[2][:10] == 5).all() and not bool(kept[ref[2]].all())
    assert torch.equal(ncc_predict(H, means, ids, W, b, backend="torch", all_classes=True)[2], ref[2])


def test_nccstats_all_classes_save_load_merge(tmp_path):
    means, kept, W, b, H, Y = _setup(5)
    whole = NCCStats(50, means, kept, W, b, all_classes=True).update(H, Y, backend="torch")
    ids = kept.nonzero().squeeze(1)
    sel = kept[Y]
    _, lm, nall = ncc_naive(H[sel], means, ids, W, b, all_classes=True)
    assert torch.equal(whole.hits_all, torch.bincount(Y[sel], weights=(nall == lm).double(), minlength=50).long())
    assert whole.agreement_all == pytest.approx(float((nall == lm).double().mean()))
    # the canonical decisions are those of an accumulator without the extra candidates
    canon = NCCStats(50, means, kept, W, b).update(H, Y, backend="torch")
    assert torch.equal(canon.hits, whole.hits) and canon.hits_all is None and canon.agreement_all is None
    a = NCCStats(50, means, kept, W, b, all_classes=True).update(H[:100], Y[:100], backend="torch")
    p = tmp_path / "ncc.safetensors"
    a.save(p)
    back = NCCStats.load(p, means=means, W=W, b=b)
    assert back.all_classes
    back.update(H[100:], Y[100:], backend="torch")  # resume
    assert torch.equal(back.hits_all, whole.hits_all) and torch.equal(back.hits, whole.hits)
    rest = NCCStats(50, means, kept, W, b, all_classes=True).update(H[100:], Y[100:], backend="torch")
    assert torch.equal(NCCStats.load(p).merge(rest).hits_all, whole.hits_all)
    with pytest.raises(UsageError, match="full means table"):  # the all-class search needs every mean
        NCCStats.load(p, means=means[kept], W=W)
    with pytest.raises(DataError, match="differ"):  # a non-kept mean changed: other decisions
        m2 = means.clone()
        m2[~kept] += 1
        NCCStats.load(p, means=m2, W=W)
    with pytest.raises(DataError, match="hits_all"):
        canon.merge(NCCStats.load(p))
    # a state saved without the all-class decisions (an older lcfast) loads and resumes as it was
    q = tmp_path / "old.safetensors"
    NCCStats(50, means, kept, W, b).update(H[:100], Y[:100], backend="torch").save(q)
    old = NCCStats.load(q, means=means, W=W, b=b)
    assert not old.all_classes and old.update(H[100:], Y[100:], backend="torch").hits_all is None
