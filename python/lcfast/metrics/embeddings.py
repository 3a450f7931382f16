"""`measure_embeddings`: every NC metric of a profile from raw arrays (features, labels, the LM
head, validation features), with standard errors over random folds of the rows — the array-level
entry point above `lcfast.metrics.measure` (one measurement) and `lcfast.metrics.uncertainty`
(folds). Definitions: docs/metrics.md."""

from __future__ import annotations

from collections.abc import Callable

import torch

from lcfast import validate
from lcfast.errors import DataError, UsageError
from lcfast.metrics.profiles import MetricProfile
from lcfast.metrics.uncertainty import measure_folds, merge_folds
from lcfast.stats.classstats import ClassStats
from lcfast.stats.inputs import as_tensor
from lcfast.stats.ncc import NCCStats

__all__ = ["measure_embeddings"]


def measure_embeddings(
    H: torch.Tensor,
    Y: torch.Tensor,
    W: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    H_val: torch.Tensor | None = None,
    Y_val: torch.Tensor | None = None,
    min_count: int = 1,
    backend: str = "auto",
    *,
    profile: str = "canonical",
    cdnv_power: float | None = None,
    covariance: bool = True,
    n_classes: int | None = None,
    tol: float | None = None,
    chunk: int = 32768,
    return_table: bool = False,
    decode: Callable[[int], str] | None = None,
    folds: int = 1,
    seed: int = 0,
    fold_block: int | None = None,
):
    """Every metric of `profile` ("canonical": CANONICAL_KEYS, "paper": PAPER_KEYS; docs/metrics.md)
    from raw tensors: H [N, d] features, Y [N] labels (next tokens), W [C, d] / b [C] the LM head,
    H_val / Y_val validation features for NC4 (any float dtype; accumulated in float64).

    The number of classes is W.shape[0], else `n_classes`, else 1 + the largest label.
    Canonical: samples of classes below min_count are dropped before accumulating, so Σ_W
    (nc1_pinv, `covariance=True`) is exactly over kept samples. Paper: nothing is dropped (classes
    below min_count stay NC4 candidates at their own means; unseen classes sit at the origin) and no
    covariance is accumulated (no paper column needs it). With `return_table=True` returns
    (dict, per-token DataFrame). Tensors or numpy arrays.

    Precision (docs/metrics.md, "Precision"): the rows are cut into contiguous blocks of
    `fold_block` positions (default ⌈N / (8·folds)⌉, so rows of one sequence stay together when
    H is in sequence order — pass your window length to make a window never straddle two folds),
    the blocks are dealt at random (`seed`) to `folds` folds, and `lcfast.metrics.uncertainty.
    measure_folds` measures the merged folds with a jackknife `M_se` per metric (None with
    folds=1); the validation rows are split the same way for NC4's SE. Point values do not depend
    on folds or seed. The result has every key of `result_keys(profile)`; `n_positions` counts
    every train row, `n_samples` those of kept classes."""
    H, Y, W, b, H_val, Y_val = (as_tensor(x, f"measure_embeddings: {name}") for x, name in
                                ((H, "H"), (Y, "Y"), (W, "W"), (b, "b"), (H_val, "H_val"), (Y_val, "Y_val")))
    profile = MetricProfile.parse(profile)
    power = profile.cdnv_power(cdnv_power)
    paper = profile is MetricProfile.PAPER
    if H.dim() != 2 or Y.dim() != 1 or Y.numel() != H.shape[0]:
        raise UsageError(f"measure_embeddings: H must be [N, d] and Y [N], got {tuple(H.shape)} and {tuple(Y.shape)}")
    if H.shape[0] == 0:
        raise DataError("measure_embeddings: no samples (H is empty)")
    if Y.dtype.is_floating_point or Y.dtype == torch.bool:
        raise UsageError(f"measure_embeddings: Y must be an integer tensor, got {Y.dtype}")
    if (H_val is None) != (Y_val is None):
        raise UsageError("measure_embeddings: H_val and Y_val go together")
    d = H.shape[1]
    if W is not None:
        C = int(W.shape[0])
    elif n_classes is not None:
        C = validate.integer("measure_embeddings: n_classes", n_classes, min=1)
    else:
        C = int(Y.max()) + 1
        if Y_val is not None and Y_val.numel():
            C = max(C, int(Y_val.max()) + 1)
    if int(Y.min()) < 0 or int(Y.max()) >= C:
        raise DataError(f"measure_embeddings: labels must lie in [0, {C}), got range [{int(Y.min())}, {int(Y.max())}]")
    if W is not None and W.shape[1] != d:
        raise UsageError(f"measure_embeddings: W has feature dim {W.shape[1]}, H has {d}")
    min_count = validate.integer("min_count", min_count, min=1)
    chunk = validate.integer("measure_embeddings: chunk", chunk, min=1)
    K = validate.integer("measure_embeddings: folds", folds, min=1)
    seed = validate.integer("measure_embeddings: seed", seed, min=0)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    n_positions = int(H.shape[0])
    fold = _fold_of_rows(n_positions, K, fold_block, gen, "measure_embeddings")
    Y = Y.to(H.device, torch.int64)
    counts = torch.bincount(Y, minlength=C)
    kept = counts >= min_count
    if not bool(kept.all()) and not paper:
        sel = kept[Y]
        H, Y, fold = H[sel], Y[sel], fold[sel.cpu()]
    sts = []
    for f in range(K):
        rows = None if K == 1 else (fold == f).nonzero().squeeze(1).to(H.device)
        Hf, Yf = (H, Y) if rows is None else (H[rows], Y[rows])
        st = ClassStats(C, d, covariance=covariance and not paper, device=H.device)
        for i in range(0, Hf.shape[0], chunk):
            st.update(Hf[i : i + chunk], Yf[i : i + chunk], backend=backend)
        sts.append(st)
    nccs = None
    if W is not None and H_val is not None:
        if H_val.dim() != 2 or H_val.shape[1] != d or Y_val.dim() != 1 or Y_val.numel() != H_val.shape[0]:
            raise UsageError(f"measure_embeddings: H_val must be [N, {d}] and Y_val [N], "
                             f"got {tuple(H_val.shape)}, {tuple(Y_val.shape)}")
        means = sts[0].means if K == 1 else merge_folds(sts).means
        vfold = _fold_of_rows(int(H_val.shape[0]), K, fold_block, gen, "measure_embeddings (validation)",
                              allow_few=True)
        nccs = []
        for f in range(K):
            ncc = NCCStats(C, means, kept.cpu(), W, b, all_classes=paper)
            rows = None if K == 1 else (vfold == f).nonzero().squeeze(1).to(H_val.device)
            Hv, Yv = (H_val, Y_val) if rows is None else (H_val[rows], Y_val[rows])
            for i in range(0, Hv.shape[0], chunk):
                ncc.update(Hv[i : i + chunk], Yv[i : i + chunk], backend=backend)
            nccs.append(ncc)
    out = measure_folds(sts, W, b, nccs, min_count, backend, profile=profile, cdnv_power=power, tol=tol,
                        decode=decode, return_table=return_table)
    r, tab = out if return_table else (out, None)
    r["n_positions"] = n_positions  # the rows dropped below min_count were seen too
    return (r, tab) if return_table else r


def _fold_of_rows(n: int, K: int, block: int | None, gen: torch.Generator, what: str,
                  allow_few: bool = False) -> torch.Tensor:
    """Fold id (int64 [n], CPU) of each row: contiguous blocks of `block` rows (default
    ⌈n / (8K)⌉) dealt to K folds in a random order from `gen` (balanced: fold sizes differ by at
    most one block). UsageError when there are fewer blocks than folds (train rows; validation
    rows may leave folds empty: NC4's SE is then None)."""
    if K == 1:
        return torch.zeros(n, dtype=torch.int64)
    if block is None:
        block = max(1, -(-n // (8 * K)))
    block = validate.integer(f"{what}: fold_block", block, min=1)
    nb = -(-n // block)
    if nb < K and not allow_few:
        raise UsageError(f"{what}: {n} rows in blocks of {block} make {nb} blocks, fewer than folds={K}; "
                         f"use fewer folds or a smaller fold_block")
    perm = torch.randperm(nb, generator=gen)
    fold_of_block = torch.empty(nb, dtype=torch.int64)
    fold_of_block[perm] = torch.arange(nb, dtype=torch.int64) % K
    return fold_of_block.repeat_interleave(block)[:n]
