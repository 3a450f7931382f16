"""K disjoint folds of windows accumulated side by side (`collect --folds K`), for standard errors.

Every window of a pass belongs to one fold, a pure function of (seed, window index) (lcfast.model.
features.WindowPlan), so torchrun ranks, `--shard` parts and resumed runs agree. The folds live in
the pass's one accumulator, as the hidden-state slots of `--layers` do (lcfast.pipeline.collect.layers):

- train passes: one `ClassStats` of K × B classes, fold k holding classes [k·B, (k+1)·B) with B the
  layout's classes (slots × classes per slot). A row's label is moved to its fold's block, so each
  position still updates exactly one accumulator row: the folds cost memory (K×) and save time, not
  accumulation time. `split_folds` gives the K ClassStats; their merge is the single-fold total.
- val pass: `FoldedNCC`, an `NCCStats` of K × C counters (hits, totals, hits_all per fold and class)
  whose `update` makes the nearest-mean search once over the merged train means (the one set of means
  collect has in one pass) and counts each position in its fold. `split_ncc` gives K NCCStats.

Saving, resuming, the torchrun all-reduce and `lcfast merge` of `--shard` parts work unchanged: they
see one accumulator. With K = 1 both are exactly the accumulators collect always wrote.
"""

from __future__ import annotations

import torch

from lcfast.errors import DataError, UsageError
from lcfast.stats.ncc import NCCStats, ncc_predict

F64 = torch.float64
#: at most this many folds (the jackknife gains little beyond, the memory grows linearly)
MAX_FOLDS = 64
#: the default of `collect --folds` (and the largest tried when it is not given and memory is short)
DEFAULT_FOLDS = 8


def fold_rows(folds_of_windows, mask: torch.Tensor) -> torch.Tensor:
    """The fold of every label position (int64 [n]) of windows whose folds are `folds_of_windows`
    ([count]) and valid positions `mask` [count, T] (rows in the order `H[mask]` takes them)."""
    f = torch.as_tensor(folds_of_windows, dtype=torch.int64)
    return f.repeat_interleave(mask.sum(dim=1).to(torch.int64))


def split_folds(stats, n_folds: int) -> list:
    """The K ClassStats of a train state of K folds (each of n_classes / K classes)."""
    if n_folds == 1:
        return [stats]
    if stats.n_classes % n_folds:
        raise DataError(f"a train state of {stats.n_classes} classes cannot hold {n_folds} folds")
    B = stats.n_classes // n_folds
    return [stats.select(torch.arange(k * B, (k + 1) * B)) for k in range(n_folds)]


def merge_all(folds: list):
    """The total of K ClassStats (a new accumulator; the folds are left as they are)."""
    out = folds[0].copy()
    for f in folds[1:]:
        out.merge(f)
    return out


def split_ncc(ncc: NCCStats, n_folds: int) -> list[NCCStats]:
    """The K NCCStats (C classes each) of a val state of K folds."""
    if n_folds == 1:
        return [ncc]
    if ncc.n_classes % n_folds:
        raise DataError(f"a val state of {ncc.n_classes} classes cannot hold {n_folds} folds")
    C = ncc.n_classes // n_folds
    out = []
    for k in range(n_folds):
        sl = slice(k * C, (k + 1) * C)
        f = NCCStats(C, None, ncc.kept[sl], None, all_classes=ncc.all_classes)
        f.hits, f.totals = ncc.hits[sl].clone(), ncc.totals[sl].clone()
        if ncc.all_classes:
            f.hits_all = ncc.hits_all[sl].clone()
        f.meta = dict(ncc.meta)
        out.append(f)
    return out


class FoldedNCC(NCCStats):
    """NC4 decisions of K folds of val positions in one NCCStats of K × C counters (module docstring).

    FoldedNCC(n_folds, C, means, kept, W, b=None, all_classes=False): means, kept, W, b as NCCStats
    takes them for C classes. update(H_val [N, d], Y_val [N], backend, fold=int64 [N] in [0, K))."""

    def __init__(self, n_folds: int, n_classes: int, means, kept, W, b=None, *, all_classes: bool = False):
        self.inner = NCCStats(n_classes, means, kept, W, b, all_classes=all_classes)
        super().__init__(n_folds * n_classes, None, self.inner.kept.repeat(n_folds), None, all_classes=all_classes)
        self.n_folds, self.C = int(n_folds), int(n_classes)
        self.meta.update(self.inner.meta)

    @classmethod
    def resume(cls, saved: NCCStats, n_folds: int, n_classes: int, means, kept, W, b=None) -> FoldedNCC:
        """A FoldedNCC continuing the counters of a saved state (checked: same classes, same means)."""
        st = cls(n_folds, n_classes, means, kept, W, b, all_classes=saved.all_classes)
        if saved.n_classes != st.n_classes or not torch.equal(saved.kept, st.kept):
            raise DataError(f"a val state of {saved.n_classes} classes is not one of {n_folds} folds × {n_classes}")
        fp = saved.meta.get("means_fingerprint")
        if fp is not None and fp != st.meta.get("means_fingerprint"):
            raise DataError("NCCStats: these means differ from the ones the stored decisions were made with")
        st.hits, st.totals = saved.hits.clone(), saved.totals.clone()
        if saved.all_classes:
            st.hits_all = saved.hits_all.clone()
        st.meta = {**saved.meta, **st.meta}
        return st

    def update(self, H_val: torch.Tensor, Y_val: torch.Tensor, backend: str = "auto", fold=None) -> FoldedNCC:
        if fold is None:
            raise UsageError("FoldedNCC.update: the fold of every position is needed")
        inner, C = self.inner, self.C
        fold = torch.as_tensor(fold, dtype=torch.int64)
        if Y_val.numel() == 0:
            return self
        dev = inner.W.device
        Y = Y_val.to(dev, torch.int64)
        lo, hi = int(Y.min()), int(Y.max())
        if lo < 0 or hi >= C:
            raise DataError(f"NCCStats.update: labels must lie in [0, {C}), got range [{lo}, {hi}]")
        if int(fold.min()) < 0 or int(fold.max()) >= self.n_folds:
            raise UsageError(f"FoldedNCC.update: folds must lie in [0, {self.n_folds})")
        H = H_val.to(dev)
        sel = inner.kept.to(dev)[Y]  # only positions of kept labels count (as NCCStats.update)
        if not bool(sel.all()):
            H, Y, fold = H[sel], Y[sel], fold[sel.cpu()]
        if Y.numel() == 0:
            return self
        if not bool(torch.isfinite(H).all()):
            raise DataError("NCCStats.update: validation features contain non-finite values")
        slot = (Y.cpu() + fold * C)
        n = self.n_classes
        if self.all_classes:
            ncc, lm, ncc_all = ncc_predict(H, inner._all_means.to(dev), inner.kept_ids.to(dev), inner.W, inner.b,
                                           backend=backend, all_classes=True)
            self.hits_all += torch.bincount(slot, weights=(ncc_all == lm).to(F64).cpu(),
                                            minlength=n).round().to(torch.int64)
        else:
            ncc, lm = ncc_predict(H, inner._means.to(dev), inner.kept_ids.to(dev), inner.W, inner.b, backend=backend)
        self.totals += torch.bincount(slot, minlength=n)
        self.hits += torch.bincount(slot, weights=(ncc == lm).to(F64).cpu(), minlength=n).round().to(torch.int64)
        return self


__all__ = ["FoldedNCC", "fold_rows", "split_folds", "split_ncc", "merge_all", "MAX_FOLDS", "DEFAULT_FOLDS"]
