"""Fused NCC agreement: nearest kept class mean and LM-head argmax per position, never B×C.

Launcher: :func:`ncc_triton` (torch twin: ``lcfast.stats.ncc.ncc_torch``).

Strategy
--------
One program per BLOCK_B validation rows. It walks the class dimension in BLOCK_C tiles twice:

1. kept means μ (K×d): score = ‖μ_c‖² − 2 h·μ_c (the ‖h‖² term is the same for every class and
   drops out of the argmin), Gram tile by ``tl.dot`` over d, then a running (min, argmin) per row
   kept in registers (``tl.min(..., return_indices=True)`` per tile, strict < across tiles);
2. the LM head W (C×d) and bias b: logit = h·w_c + b_c, running (max, argmax) over the full
   vocabulary.

With ``all_classes=True`` (the paper's NC4, docs/metrics.md) a third walk (constexpr HAS_REST)
visits the C − K means that are not kept, with their own running (min, argmin); the kernel then
compares it with the kept walk's and writes the class id of the nearest of *all* C means (ties to
the lower class id, as argmin over the full table). The kept walk is unchanged, so the canonical
``ncc_pred`` is bit-identical with and without it, and the extra work is C − K mean rows.

Only B ints per output leave the kernel; the B×K distance and B×C logit matrices never exist.
Ties resolve to the lowest index, as ``torch.argmin``/``argmax`` do: within a tile through the
reduction's left tie-break, across tiles because a later tile must be strictly better. The
nearest-mean index is mapped to a class id through ``kept_ids`` on the host.

H is read in its own dtype (fp32/bf16/fp16) and converted in registers: no B×d copy. ``‖μ_c‖²`` is
computed in float64 on the host from the operand-precision means. Precision modes as in
:mod:`lcfast.kernels.pairwise`: "ieee" (default, fp32 FMA), "tf32x3", "tf32", "bf16" (operands
rounded to bfloat16, fp32 accumulation). In the reduced modes a near-tie can flip; ``lcfast bench``
reports the share of positions on which each mode agrees with the naive float32 torch twin.
"""


import torch
import triton
import triton.language as tl

from lcfast.errors import UsageError
from lcfast.kernels._common import INTERPRET, as_float_input, check_device
from lcfast.kernels._tiles import tile_dot

__all__ = ["ncc_triton", "PRECISIONS"]

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")


@triton.jit
def _nearest(h_ptr, stride_h, rows64, rmask, mu_ptr, stride_mu, musq_ptr, K, D,
             PREC: tl.constexpr, OP_BF16: tl.constexpr, UPCAST: tl.constexpr,
             BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    """Running (min, argmin) over the K rows of mu of ‖μ_c‖² − 2 h·μ_c; first row wins ties."""
    cc = tl.arange(0, BLOCK_C)
    best = tl.full((BLOCK_B,), float("inf"), tl.float32)
    best_i = tl.zeros((BLOCK_B,), dtype=tl.int32)
    for c0 in range(0, K, BLOCK_C):
        cols = c0 + cc
        cmask = cols < K
        dots = tile_dot(h_ptr, stride_h, rows64, rmask, mu_ptr, stride_mu, cols.to(tl.int64), cmask, D,
                        PREC, OP_BF16, UPCAST, BLOCK_B, BLOCK_C, BLOCK_K)
        musq = tl.load(musq_ptr + cols, mask=cmask, other=0.0)
        score = tl.where(cmask[None, :], musq[None, :] - 2.0 * dots, float("inf"))
        tmin, targ = tl.min(score, axis=1, return_indices=True)
        better = tmin < best
        best = tl.where(better, tmin, best)
        best_i = tl.where(better, targ + c0, best_i)
    return best, best_i


@triton.jit
def _ncc_kernel(
    h_ptr, stride_h, B,
    mu_ptr, stride_mu, musq_ptr, K,
    w_ptr, stride_w, b_ptr, C,
    D,
    ncc_out, lm_out,
    rmu_ptr, stride_rmu, rmusq_ptr, K2, kid_ptr, rid_ptr, all_out,
    HAS_BIAS: tl.constexpr, PREC: tl.constexpr, OP_BF16: tl.constexpr, UPCAST: tl.constexpr,
    HAS_REST: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    rmask = rows < B
    rows64 = rows.to(tl.int64)
    cc = tl.arange(0, BLOCK_C)

    # 1) nearest kept mean: argmin_c ‖μ_c‖² − 2 h·μ_c
    best, best_i = _nearest(h_ptr, stride_h, rows64, rmask, mu_ptr, stride_mu, musq_ptr, K, D,
                            PREC, OP_BF16, UPCAST, BLOCK_B, BLOCK_C, BLOCK_K)
    tl.store(ncc_out + rows, best_i.to(tl.int64), mask=rmask)
    if HAS_REST:
        # 1b) the means not kept (unseen classes at the origin): nearest of all C class means
        rbest, rbest_i = _nearest(h_ptr, stride_h, rows64, rmask, rmu_ptr, stride_rmu, rmusq_ptr, K2, D,
                                  PREC, OP_BF16, UPCAST, BLOCK_B, BLOCK_C, BLOCK_K)
        kid = tl.load(kid_ptr + best_i, mask=rmask, other=0)
        rid = tl.load(rid_ptr + rbest_i, mask=rmask, other=0)
        take = (rbest < best) | ((rbest == best) & (rid < kid))
        tl.store(all_out + rows, tl.where(take, rid, kid), mask=rmask)

    # 2) language-model prediction: argmax_c w_c·h + b_c over the full vocabulary
    top = tl.full((BLOCK_B,), float("-inf"), tl.float32)
    top_i = tl.zeros((BLOCK_B,), dtype=tl.int32)
    for c0 in range(0, C, BLOCK_C):
        cols = c0 + cc
        cmask = cols < C
        logits = tile_dot(h_ptr, stride_h, rows64, rmask, w_ptr, stride_w, cols.to(tl.int64), cmask, D,
                          PREC, OP_BF16, UPCAST, BLOCK_B, BLOCK_C, BLOCK_K)
        if HAS_BIAS:
            bias = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            logits = logits + bias[None, :]
        logits = tl.where(cmask[None, :], logits, float("-inf"))
        tmax, targ = tl.max(logits, axis=1, return_indices=True)
        better = tmax > top
        top = tl.where(better, tmax, top)
        top_i = tl.where(better, targ + c0, top_i)
    tl.store(lm_out + rows, top_i.to(tl.int64), mask=rmask)


def _default_config(precision: str) -> dict:
    if INTERPRET:
        return dict(block_b=32, block_c=32, block_k=32, num_warps=4)
    # no register spills with triton 3.9 for sm_90 (64×64 with 4 warps spills in "ieee")
    if precision in ("ieee", "tf32x3"):
        return dict(block_b=64, block_c=64, block_k=32, num_warps=8)
    return dict(block_b=128, block_c=128, block_k=32, num_warps=8)


def ncc_triton(
    H: torch.Tensor,
    means: torch.Tensor,
    kept_ids: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor | None = None,
    *,
    precision: str = "ieee",
    block_b: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    all_classes: bool = False,
):
    """(ncc_pred int64[B], lm_pred int64[B]) class ids for the rows of H (B×d); with
    ``all_classes=True`` also ncc_all_pred int64[B], the nearest of all C means (module docstring).

    means: the class means, either all C rows (C×d, indexed by ``kept_ids``) or only the kept rows
    (K×d, row k is class ``kept_ids[k]``); a ``means`` with C rows is always the full table
    (required with ``all_classes``). kept_ids: K ≥ 1 class ids. W: C×d LM head, b: C bias or None.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"ncc_triton: precision must be one of {PRECISIONS}, got {precision!r}")
    H = as_float_input(H, "H", "ncc_triton")
    W = as_float_input(W, "W", "ncc_triton")
    B, d = H.shape
    C = W.shape[0]
    if W.shape[1] != d:
        raise UsageError(f"ncc_triton: W must be C×{d}, got {tuple(W.shape)}")
    kept_ids = kept_ids.reshape(-1).to(torch.int64)
    K = kept_ids.numel()
    if K == 0:
        raise UsageError("ncc_triton: no kept classes (kept_ids is empty)")
    if means.dim() != 2 or means.shape[1] != d:
        raise UsageError(f"ncc_triton: means must be [C or K, {d}], got {tuple(means.shape)}")
    if b is not None and b.reshape(-1).shape[0] != C:
        raise UsageError(f"ncc_triton: b must have {C} entries, got {tuple(b.shape)}")
    dev = check_device(H, means, kept_ids, W, b, what="ncc_triton")
    if all_classes and means.shape[0] != C:
        raise UsageError(f"ncc_triton: all_classes needs the full means table [{C}, {d}], got {tuple(means.shape)}")
    if means.shape[0] == C:
        mu = means.index_select(0, kept_ids)
    elif means.shape[0] == K:
        mu = means
    else:
        raise UsageError(f"ncc_triton: means has {means.shape[0]} rows; expected C={C} or K={K}")

    op_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    mu = mu.detach().to(op_dtype).contiguous()
    musq = (mu.to(torch.float64) ** 2).sum(1).to(torch.float32).contiguous()
    bias = b.detach().reshape(-1).contiguous() if b is not None else musq
    rest = None
    if all_classes:
        m = torch.ones(C, dtype=torch.bool, device=dev)
        m[kept_ids] = False
        rest = m.nonzero().squeeze(1)
    has_rest = rest is not None and rest.numel() > 0
    if has_rest:
        rmu = means.index_select(0, rest).detach().to(op_dtype).contiguous()
        rmusq = (rmu.to(torch.float64) ** 2).sum(1).to(torch.float32).contiguous()
    else:  # placeholders: the kernel never reads them
        rmu, rmusq = mu, musq

    ncc_idx = torch.empty(B, dtype=torch.int64, device=dev)
    lm_pred = torch.empty(B, dtype=torch.int64, device=dev)
    all_pred = torch.empty(B, dtype=torch.int64, device=dev) if has_rest else None
    if B == 0:
        return (ncc_idx, lm_pred, ncc_idx.clone()) if all_classes else (ncc_idx, lm_pred)
    cfg = _default_config(precision)
    bb = block_b or cfg["block_b"]
    bc = block_c or cfg["block_c"]
    bk = block_k or cfg["block_k"]
    nw = num_warps or cfg["num_warps"]
    prec = {"ieee": "ieee", "tf32x3": "tf32x3", "tf32": "tf32", "bf16": "ieee"}[precision]
    grid = (triton.cdiv(B, bb),)
    _ncc_kernel[grid](
        H, H.stride(0), B,
        mu, mu.stride(0), musq, K,
        W, W.stride(0), bias, C,
        d,
        ncc_idx, lm_pred,
        rmu, rmu.stride(0), rmusq, rest.numel() if has_rest else 0,
        kept_ids, rest if has_rest else kept_ids, all_pred if has_rest else ncc_idx,
        HAS_BIAS=b is not None, PREC=prec, OP_BF16=precision == "bf16", UPCAST=INTERPRET, HAS_REST=has_rest,
        BLOCK_B=bb, BLOCK_C=bc, BLOCK_K=bk,
        num_warps=nw,
    )
    ncc_pred = kept_ids[ncc_idx]
    if all_classes:
        return ncc_pred, lm_pred, (all_pred if has_rest else ncc_pred.clone())
    return ncc_pred, lm_pred
