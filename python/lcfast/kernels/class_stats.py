"""Fused per-class statistics: counts, Σ(h − shift) and Σ‖h − shift‖² (or Σ‖h − centers[y]‖²).

Launcher: :func:`class_stats_triton` (torch twin: ``lcfast.stats.classstats.class_stats_torch``).

Strategy ("segmented", the default) — sort, then segmented reduction in registers
---------------------------------------------------------------------------------
Language-model labels are Zipf distributed: at GPT-2 vocabulary scale the most frequent token takes
several percent of all positions, the top hundred classes about half. One atomic add per (row,
element) into ``sums[y]`` (strategy "atomic", kept as the measured baseline) makes every program that
holds a frequent token hammer the same 1–8 KiB row of the accumulator, and those float64 atomics
serialise in L2.

1. The labels (only the labels: B int32) are sorted on the device (``torch.sort``); ``perm`` gives
   the source row of each sorted position. H itself is never permuted or copied: the kernel
   gathers row ``perm[r]`` directly (each row is a contiguous, coalesced d-slice).
2. Grid = (⌈B / BLOCK_R⌉, ⌈d / BLOCK_D⌉). A program reads its BLOCK_R sorted rows × BLOCK_D
   features once, converts to float64, subtracts the shift, and takes the inclusive prefix sum cs
   down the rows (``tl.cumsum``). Sorted rows make every class one contiguous run [s, e], whose
   total is cs[e] − (cs[s] − x[s]); so only the *boundary rows* of runs issue atomics: the end row
   adds +cs[e], the start row (unless it opens the block) adds −(cs[s] − x[s]), a one-row run adds
   x itself. Per block that is ≤ 2 float64 atomics per (class present, feature) instead of one per
   (row, feature). The same trick on the per-row partial ‖·‖² gives Σ‖h − shift‖²; counts come
   from the row indices (e + 1 − s), from the d-tile-0 programs only. (A segmented
   ``tl.associative_scan`` would save the start-row atomic but runs element by element under the
   Triton interpreter — thousands of times slower — so the plain prefix sum is used.)
3. Contention is bounded: a class receives at most 2 atomics per address per block it touches
   (≈ 2·n_c / BLOCK_R + 2 in total), whatever the skew; rows of rare classes land on distinct
   addresses (a one-row run is one atomic, as in the baseline). :func:`atomic_profile` computes
   the atomics and the worst per-address contention of both strategies from a label vector, so the
   effect of skew is measured on the labels themselves (``lcfast bench`` reports it for Zipf and
   uniform labels, with GPU timings of both strategies). At the paper's size (B = 65,536 labels,
   C = 50,257, Zipf exponent 1.1: 11k distinct classes, the top one 9,105 rows) the per-row
   baseline issues 65,536 atomics per feature column with up to 9,105 on one address; the
   segmented strategy 15,471, at most 143 on one address (uniform labels: 65,536 / 9 vs
   55,183 / 3).

Everything after the load is float64 (values, prefix sums, atomics): the result is the float64 sum
up to the order of additions. Atomics make that order non-deterministic, and the prefix-sum
difference adds a rounding of about 1e-16 × (the block's partial sum): far below the float32
resolution of the inputs. The optional ``out=(counts, sums, sqsums)`` accumulates into existing
float64 buffers so that a streaming ``ClassStats.update`` never allocates or re-adds a C×d temporary.

Traffic per call: B·d·sizeof(H) read once, B labels (+ the sort), and for each class present in
the batch a read of its shift row (per-class shift, as ``ClassStats`` uses) and a read-modify-write
of its float64 accumulator row — the minimum for an in-place update; ``lcfast bench`` reports
achieved GB/s against that minimum. Launch configuration (``_default_blocks``): 64 rows × 32
features, 4 warps — no register spills for sm_90 with triton 3.6 and 3.9 (checked by compiling
for the target without a GPU).
"""


import torch
import triton
import triton.language as tl

from lcfast.backend import check_label_range, check_label_shape
from lcfast.errors import UsageError
from lcfast.kernels._common import INTERPRET, as_float_input, check_device, next_pow2

__all__ = ["class_stats_triton", "atomic_profile", "STRATEGIES"]

STRATEGIES = ("segmented", "atomic")


@triton.jit
def _class_stats_kernel(
    h_ptr, stride_h,
    perm_ptr, lab_ptr,
    shift_ptr, stride_shift,
    ctr_ptr, stride_ctr,
    counts_ptr, sums_ptr, stride_sums, sq_ptr,
    B, D,
    HAS_PERM: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_CENTERS: tl.constexpr,
    SEGMENTED: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_d = tl.program_id(1)
    local = tl.arange(0, BLOCK_R)
    rows = pid_r * BLOCK_R + local
    rmask = rows < B
    lab = tl.load(lab_ptr + rows, mask=rmask, other=0)
    lab64 = lab.to(tl.int64)
    if HAS_PERM:
        src = tl.load(perm_ptr + rows, mask=rmask, other=0).to(tl.int64)
    else:
        src = rows.to(tl.int64)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    m2d = rmask[:, None] & cmask[None, :]

    h = tl.load(h_ptr + src[:, None] * stride_h + cols[None, :], mask=m2d, other=0.0).to(tl.float64)
    if HAS_SHIFT:
        # stride_shift == 0: one shift vector for all classes; else a per-class [C, d] shift
        s = tl.load(shift_ptr + lab64[:, None] * stride_shift + cols[None, :], mask=m2d, other=0.0)
        x = h - s
    else:
        x = h
    if HAS_CENTERS:
        c = tl.load(ctr_ptr + lab64[:, None] * stride_ctr + cols[None, :], mask=m2d, other=0.0)
        dev = h - c
    else:
        dev = x
    q = tl.sum(dev * dev, axis=1)  # this d-tile's part of the row's squared norm
    ones = rmask.to(tl.float64)
    first_tile = (tl.zeros([BLOCK_R], dtype=tl.int32) + pid_d) == 0

    if SEGMENTED:
        # Rows are sorted by label, so each class is one contiguous run of rows. With the
        # inclusive prefix sum cs (exclusive: cs - x) down the block, a run [s, e] totals
        # cs[e] - (cs[s] - x[s]): the end row adds +cs[e], the start row adds -(cs[s] - x[s])
        # (nothing when the run starts the block). A one-row run is one atomic of x itself.
        prev = tl.load(lab_ptr + rows - 1, mask=rmask & (local > 0), other=-1)
        nxt = tl.load(lab_ptr + rows + 1, mask=(rows + 1 < B) & (local < BLOCK_R - 1), other=-1)
        is_end = (lab != nxt) & rmask
        is_start = (lab != prev) & rmask & (local > 0)
        emit = is_end | is_start
        cs = tl.cumsum(x, axis=0)
        v = tl.where(is_end[:, None], cs, 0.0) - tl.where(is_start[:, None], cs - x, 0.0)
        tl.atomic_add(sums_ptr + lab64[:, None] * stride_sums + cols[None, :], v,
                      mask=emit[:, None] & cmask[None, :], sem="relaxed")
        qc = tl.cumsum(q, axis=0)
        qv = tl.where(is_end, qc, 0.0) - tl.where(is_start, qc - q, 0.0)
        tl.atomic_add(sq_ptr + lab64, qv, mask=emit, sem="relaxed")
        lf = local.to(tl.float64)
        nv = tl.where(is_end, lf + 1.0, 0.0) - tl.where(is_start, lf, 0.0)
        tl.atomic_add(counts_ptr + lab64, nv, mask=emit & first_tile, sem="relaxed")
    else:
        tl.atomic_add(sums_ptr + lab64[:, None] * stride_sums + cols[None, :], x, mask=m2d, sem="relaxed")
        tl.atomic_add(sq_ptr + lab64, q, mask=rmask, sem="relaxed")
        tl.atomic_add(counts_ptr + lab64, ones, mask=rmask & first_tile, sem="relaxed")


def _default_blocks(d: int) -> tuple[int, int, int]:
    if INTERPRET:  # fewer, larger programs: the interpreter pays per program, not per lane
        return 64, min(128, max(16, next_pow2(d))), 4
    # 64 rows × 32 features, 4 warps: 114 registers, no spills (triton 3.9, sm_90); a 64×64 tile
    # with 4 warps needs 255 registers and spills (float64 tile + prefix sum + 64-bit addresses)
    return 64, min(32, max(16, next_pow2(d))), 4


def _accumulators(out, n_classes: int, d: int, dev: torch.device):
    """(counts, sums, sqsums): fresh float64 zeros, or the caller's `out` buffers once checked."""
    if out is None:
        f64 = dict(dtype=torch.float64, device=dev)
        return torch.zeros(n_classes, **f64), torch.zeros(n_classes, d, **f64), torch.zeros(n_classes, **f64)
    counts, sums, sqsums = out
    ok = (
        counts.shape == (n_classes,) and sums.shape == (n_classes, d) and sqsums.shape == (n_classes,)
        and all(t.dtype == torch.float64 and t.device == dev for t in out)
        and sums.stride(1) == 1 and counts.is_contiguous() and sqsums.is_contiguous()
    )
    if not ok:
        raise UsageError(
            f"class_stats_triton: out must be float64 ({n_classes},), ({n_classes}, {d}), ({n_classes},) "
            f"buffers on {dev}"
        )
    return counts, sums, sqsums


def _references(shift, centers, n_classes: int, d: int):
    """(shift, its row stride — 0 for one [d] vector —, centers) as contiguous float64, or None."""
    stride_shift = 0
    if shift is not None:
        shift = shift.to(torch.float64)
        if shift.dim() == 1 and shift.shape[0] == d:
            shift = shift.contiguous()
        elif shift.dim() == 2 and shift.shape == (n_classes, d):
            shift = shift.contiguous()
            stride_shift = shift.stride(0)
        else:
            raise UsageError(f"class_stats_triton: shift must be [{d}] or [{n_classes}, {d}], got {tuple(shift.shape)}")
    if centers is not None:
        if centers.shape != (n_classes, d):
            raise UsageError(f"class_stats_triton: centers must be [{n_classes}, {d}], got {tuple(centers.shape)}")
        centers = centers.to(torch.float64).contiguous()
    return shift, stride_shift, centers


def class_stats_triton(
    H: torch.Tensor,
    Y: torch.Tensor,
    n_classes: int,
    shift: torch.Tensor | None = None,
    centers: torch.Tensor | None = None,
    *,
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    strategy: str = "segmented",
    block_rows: int | None = None,
    block_d: int | None = None,
    num_warps: int | None = None,
    check_labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class (counts f64[C], sums f64[C,d], sqsums f64[C]) in one read of H.

    H: B×d features (fp32/bf16/fp16/fp64); Y: B integer labels in [0, n_classes).
    shift: None, a [d] vector or a per-class [C, d] matrix; ``sums`` holds Σ(h − shift[y]).
    centers: None or [C, d]; when given, ``sqsums`` holds Σ‖h − centers[y]‖² (two-pass mode),
    otherwise Σ‖h − shift[y]‖² (Σ‖h‖² without shift).
    out: optional float64 (counts, sums, sqsums) buffers on H's device to accumulate into
    (returned); otherwise fresh zero buffers are returned.
    strategy: "segmented" (sort + in-register segmented reduction, default) or "atomic" (one atomic
    per row and feature, the skew-sensitive baseline).
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"class_stats_triton: strategy must be one of {STRATEGIES}, got {strategy!r}")
    n_classes = int(n_classes)
    if n_classes < 1:
        raise UsageError(f"class_stats_triton: n_classes must be ≥ 1, got {n_classes}")
    H = as_float_input(H, "H", "class_stats_triton")
    B, d = H.shape
    check_label_shape(Y, B, "class_stats_triton")
    dev = check_device(H, Y, shift, centers, what="class_stats_triton")
    counts, sums, sqsums = _accumulators(out, n_classes, d, dev)
    if B == 0:
        return counts, sums, sqsums
    if check_labels:
        check_label_range(Y, n_classes, "class_stats_triton")
    if d == 0:  # no features: only the counts move
        counts += torch.bincount(Y.reshape(-1).to(torch.int64), minlength=n_classes).to(torch.float64)
        return counts, sums, sqsums

    shift, stride_shift, centers = _references(shift, centers, n_classes, d)
    if strategy == "segmented":  # rows grouped by class: labels sorted, perm maps back to H's rows
        lab_sorted, perm = torch.sort(Y.reshape(-1))
        lab = lab_sorted.to(torch.int32)
        perm = perm.to(torch.int32)
    else:
        lab = Y.reshape(-1).to(torch.int32).contiguous()
        perm = lab  # unused

    br, bd, nw = _default_blocks(d)
    br = block_rows or br
    bd = block_d or bd
    nw = num_warps or nw
    grid = (triton.cdiv(B, br), triton.cdiv(d, bd))
    dummy = sums  # any valid pointer for absent optional inputs
    _class_stats_kernel[grid](
        H, H.stride(0),
        perm, lab,
        shift if shift is not None else dummy, stride_shift,
        centers if centers is not None else dummy, centers.stride(0) if centers is not None else 0,
        counts, sums, sums.stride(0), sqsums,
        B, d,
        HAS_PERM=strategy == "segmented", HAS_SHIFT=shift is not None, HAS_CENTERS=centers is not None,
        SEGMENTED=strategy == "segmented", BLOCK_R=br, BLOCK_D=bd,
        num_warps=nw,
    )
    return counts, sums, sqsums


def atomic_profile(Y: torch.Tensor, n_classes: int, block_rows: int = 64) -> dict:
    """How many float64 atomics each strategy issues per feature column, from the labels alone.

    Returns, for "atomic" and "segmented": ``atomics`` (per feature column, i.e. per element of a
    sums row; multiply by d for the total) and ``max_per_address`` (the most atomics that land on
    one accumulator address: the contention a frequent class causes).
    """
    Y = Y.reshape(-1).to(torch.int64).cpu()
    B = Y.numel()
    if B == 0:
        z = {"atomics": 0, "max_per_address": 0}
        return {"atomic": dict(z), "segmented": dict(z), "rows": 0}
    counts = torch.bincount(Y, minlength=n_classes)
    ys = torch.sort(Y).values
    local = torch.arange(B) % block_rows
    end = torch.ones(B, dtype=torch.bool)
    end[:-1] = ys[1:] != ys[:-1]
    end |= local == block_rows - 1
    start = torch.zeros(B, dtype=torch.bool)
    start[1:] = ys[1:] != ys[:-1]
    start &= local > 0
    emit = end | start
    per_class = torch.bincount(ys[emit], minlength=n_classes)
    return {
        "rows": B,
        "atomic": {"atomics": B, "max_per_address": int(counts.max())},
        "segmented": {"atomics": int(emit.sum()), "max_per_address": int(per_class.max())},
    }
