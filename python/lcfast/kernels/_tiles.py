"""Triton device functions shared by the kernel families (inlined into each kernel at compile time)."""

import triton
import triton.language as tl


@triton.jit
def tile_dot(a_ptr, stride_a, rows64, rmask, b_ptr, stride_b, cols64, cmask, D,
             PREC: tl.constexpr, OP_BF16: tl.constexpr, UPCAST: tl.constexpr,
             BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 [BLOCK_R, BLOCK_C] tile of A[rows] · B[cols]ᵀ over the D features, in BLOCK_K slices
    (masked rows, columns and features read as 0). Operands go to tl.dot as bf16 (OP_BF16) or fp32;
    UPCAST (the interpreter, whose tl.dot mishandles bf16) widens bf16 operands to fp32, which
    changes nothing: bf16×bf16 products are exact in fp32."""
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_R, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        kc = k0 + kk
        km = kc < D
        a = tl.load(a_ptr + rows64[:, None] * stride_a + kc[None, :], mask=rmask[:, None] & km[None, :], other=0.0)
        b = tl.load(b_ptr + cols64[None, :] * stride_b + kc[:, None], mask=km[:, None] & cmask[None, :], other=0.0)
        if OP_BF16:
            a = a.to(tl.bfloat16)
            b = b.to(tl.bfloat16)
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
        else:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC)
    return acc
