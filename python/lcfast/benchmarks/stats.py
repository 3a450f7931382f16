"""The three kernel families of `lcfast bench`: class statistics, the pairwise sweep and NCC, each
timed against its naive twin on one problem per case, and re-run at a reduced size when the naive
twin does not fit in memory (see the package docstring for what is measured)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .harness import F64, BenchRow, Ctx, free_bytes, rel_err, release, zipf_labels

CS_NAIVE = "naive: one-hot matmul (f64)"
CS_TORCH = "torch: index_put scatter"


# ------------------------------------------------------------------------------------------------
# class statistics
# ------------------------------------------------------------------------------------------------


def _class_stats_impls(ctx: Ctx, H, Yd, C: int, shift) -> list[tuple[str, Callable[[Any], Any]]]:
    """(name, fn(out buffers) -> out buffers) of every fast class-statistics path on this device."""
    from lcfast.stats.classstats import _fused_core, class_stats_torch

    ws: dict = {}
    impls = [(CS_TORCH, lambda o: class_stats_torch(H, Yd, C, shift=shift, out=o, workspace=ws))]
    core = _fused_core()
    if ctx.device.type == "cpu" and core is not None and H.dtype in (torch.float32, F64):
        # the fused one-pass loop that ClassStats.update runs on CPU (same sums, per-class shift)
        Yn = Yd.numpy()  # once, when the closure is made (was a default argument, B008)

        def fused(o, core=core, Yn=Yn):
            core.class_stats_accumulate(H.numpy(), Yn, shift.numpy(), o[1].numpy(), o[2].numpy(), o[0].numpy(),
                                        None, torch.get_num_threads())
            return o

        impls.append(("rust: fused (ClassStats CPU path)", fused))
    if ctx.use_triton:
        from lcfast.kernels.class_stats import class_stats_triton

        for strat in ("segmented", "atomic"):
            impls.append((f"triton: {strat}",
                          lambda o, s=strat: class_stats_triton(H, Yd, C, shift=shift, out=o, strategy=s)))
    return impls


def _class_stats_agreement(row: BenchRow, res, ref) -> None:
    row.err = max(rel_err(res[1], ref[1]), rel_err(res[2], ref[2]), rel_err(res[0], ref[0]))
    row.err_kind = "rel"


def _class_stats_case(ctx: Ctx, size: dict, H, shift, Y, case: str, fits: bool, fit_note: str) -> None:
    """Time the naive twin and every fast path on one label vector Y (B,) into the rows of `case`."""
    from lcfast.kernels.class_stats import atomic_profile
    from lcfast.stats.naive import class_stats_naive

    dev, C, d, B = ctx.device, size["C"], size["d"], size["B"]
    touched = int(torch.unique(Y).numel())
    Yd = Y.to(dev)
    # minimum traffic of an in-place update: H once, labels, and per touched class the shift
    # row read plus the sums row read and written (+ the scalars)
    min_bytes = B * d * H.element_size() + B * 8 + touched * (3 * d * 8 + 6 * 8)
    prof = atomic_profile(Y, C)

    def bufs():
        return (torch.zeros(C, dtype=F64, device=dev), torch.zeros(C, d, dtype=F64, device=dev),
                torch.zeros(C, dtype=F64, device=dev))

    rows = {"naive": BenchRow("class_stats", case, CS_NAIVE, size, kind="naive")}
    results: dict[str, Any] = {}
    res = ctx.run_naive(rows["naive"], fits, fit_note, lambda: class_stats_naive(H, Yd, C, shift=shift))
    if res is not None:
        results["naive"] = res
    for name, fn in _class_stats_impls(ctx, H, Yd, C, shift):
        row = rows[name] = BenchRow("class_stats", case, name, size)
        o = bufs()
        # timed: in-place accumulation into the same buffers (a streaming update; no zeroing
        # inside the timing); the agreement check uses one more call into fresh buffers
        ok = ctx.run(row, lambda fn=fn, o=o: fn(o)) is not None
        del o
        if ok:
            try:
                results[name] = tuple(t.clone() for t in fn(bufs()))
            except Exception as exc:  # noqa: BLE001
                row.note = f"FAILED (agreement call): {type(exc).__name__}: {exc}"[:300]
            row.throughput = min_bytes / row.time_s / 1e9
            row.unit = "GB/s"
            if ctx.peaks and dev.type == "cuda":
                row.frac_peak = row.throughput * 1e9 / ctx.peaks["hbm"]
            if name.startswith("triton"):
                row.extra["atomic_profile"] = prof[name.split(": ")[1]]
        release(dev)
    for r in rows.values():
        r.extra.setdefault("touched_classes", touched)
        r.extra.setdefault("atomic_profile_all", prof)
    ctx.finish_case(rows, results, CS_TORCH, _class_stats_agreement)


def class_stats_family(ctx: Ctx, size: dict, case_suffix: str = "") -> None:
    """Per-class counts, Σ(h − r_c) and Σ‖h − r_c‖² (in place, per-class shift r_c) on uniform and
    Zipf labels: the naive one-hot twin, the torch scatter, the CPU fused loop, the Triton kernels."""
    dev = ctx.device
    C, d, B = size["C"], size["d"], size["B"]
    hdtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    H = (torch.randn(B, d, generator=g) + 0.5).to(hdtype).to(dev)
    shift = torch.randn(C, d, generator=g, dtype=F64).to(dev) * 0.1
    naive_need = 16 * B * C + 4 * 8 * B * d + 8 * C * d * 2 + 8 * B * C  # one-hot (i64 + f64) + oh@shift
    fits, fit_note = ctx.naive_fits(naive_need)
    for labels in ("uniform", "zipf"):
        Y = torch.randint(0, C, (B,), generator=g) if labels == "uniform" else zipf_labels(B, C, 1.1, g)
        _class_stats_case(ctx, size, H, shift, Y, f"{labels} labels{case_suffix}", fits, fit_note)
    if not fits and not case_suffix:
        # largest batch for which the one-hot twin fits: measure the speed-up there
        free = 0.8 * free_bytes(dev)
        per_row = 24 * C + 4 * 8 * d
        B2 = int(max(256, min(B // 2, (free - 16 * C * d) // per_row)))
        B2 = 1 << int(math.log2(B2))
        class_stats_family(ctx, {"C": C, "d": d, "B": B2}, case_suffix=f", reduced B={B2}")


# ------------------------------------------------------------------------------------------------
# pairwise sweep
# ------------------------------------------------------------------------------------------------


def _pair_values_summary(ps) -> dict:
    return {
        "cdnv_mean": ps.cdnv.mean, "cos_mean": ps.cos.mean, "cos_var": ps.cos.var,
        "logk_mean": ps.logk.mean, "logk_var": ps.logk.var, "degenerate": ps.degenerate,
    }


def _pairwise_err(ps, ref) -> float:
    a, b = _pair_values_summary(ps), _pair_values_summary(ref)
    if a["degenerate"] != b["degenerate"]:
        return float("inf")
    errs = [rel_err(a[k], b[k]) for k in ("cdnv_mean", "cos_var", "logk_mean", "logk_var")]
    # cos mean of centred means is ~ −1/(C−1): judge it on the scale of its spread
    errs.append(abs(a["cos_mean"] - b["cos_mean"]) / max(math.sqrt(max(b["cos_var"], 0.0)), 1e-300))
    return max(errs)


def _pairwise_agreement(row: BenchRow, res, ref) -> None:
    row.err = _pairwise_err(res, ref)
    row.err_kind = "rel"


def pairwise_family(ctx: Ctx, size: dict, case_suffix: str = "") -> None:
    """PairwiseSums of C centred means: the naive C×C grids, the blocked torch sweep, Triton per precision."""
    from lcfast.stats.naive import pairwise_naive
    from lcfast.stats.pairwise import pairwise_torch

    dev = ctx.device
    C, d = size["C"], size["d"]
    g = torch.Generator().manual_seed(1)
    M = torch.randn(C, d, generator=g, dtype=F64)
    M = (M - M.mean(0)).to(dev)
    var = (torch.rand(C, generator=g, dtype=F64) + 0.5).to(dev)
    case = f"C={C} d={d}{case_suffix}"
    fits, fit_note = ctx.naive_fits(14 * 8 * C * C + 8 * C * d * 4)
    rows = {"naive": BenchRow("pairwise", case, "naive: C×C grids (f64)", size, kind="naive")}
    results: dict[str, Any] = {}
    res = ctx.run_naive(rows["naive"], fits, fit_note, lambda: pairwise_naive(M, var, exact=False))
    if res is not None:
        results["naive"] = res
    impls: list = [("torch: blocked (f64)", "fp64", lambda: pairwise_torch(M, var), None)]
    if ctx.use_triton:
        from lcfast.kernels.pairwise import pairwise_triton

        for prec, peak_key in (("ieee", "fp32"), ("tf32x3", "tf32"), ("tf32", "tf32"), ("bf16", "bf16")):
            info: dict = {}
            impls.append((f"triton: {prec}", peak_key,
                          lambda p=prec, i=info: pairwise_triton(M, var, precision=p, info=i), info))
    ctx.time_matrix_impls("pairwise", case, size, float(C) * (C - 1) * d, impls, rows, results)
    for name, res in results.items():
        rows[name].extra["values"] = _pair_values_summary(res)
    ctx.finish_case(rows, results, "torch: blocked (f64)", _pairwise_agreement)
    if not fits and not case_suffix:
        free = 0.8 * free_bytes(dev)
        C2 = int(math.sqrt(max(free - 32 * C * d, 1) / (14 * 8)))
        C2 = max(256, min(C // 2, C2))
        C2 = (C2 // 256) * 256
        pairwise_family(ctx, {"C": C2, "d": d}, case_suffix=", reduced")


# ------------------------------------------------------------------------------------------------
# NCC agreement
# ------------------------------------------------------------------------------------------------


def _ncc_dense(H, mu, kept, W, b, dtype):
    """The naive NCC: full B×K squared distances and B×C logits, then argmin / argmax."""
    h = H.to(dtype)
    m = mu.to(dtype)
    dist = (h * h).sum(1, keepdim=True) - 2.0 * h @ m.T + (m * m).sum(1)[None, :]
    logits = h @ W.to(dtype).T
    if b is not None:
        logits = logits + b.to(dtype)
    return kept[dist.argmin(1)], logits.argmax(1)


def _ncc_agreement(row: BenchRow, res, ref) -> None:
    same = (res[0] == ref[0]) & (res[1] == ref[1])
    row.err = 1.0 - float(same.to(F64).mean())
    row.err_kind = "mismatch"
    row.extra["ncc_mismatch"] = 1.0 - float((res[0] == ref[0]).to(F64).mean())
    row.extra["lm_mismatch"] = 1.0 - float((res[1] == ref[1]).to(F64).mean())


def ncc_family(ctx: Ctx, size: dict, case_suffix: str = "") -> None:
    """Nearest kept mean and LM argmax per position: the dense B×C twin, blocked torch, Triton per precision."""
    from lcfast.stats.ncc import ncc_torch

    dev = ctx.device
    B, C, d = size["B"], size["C"], size["d"]
    g = torch.Generator().manual_seed(2)
    hdtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    means = torch.randn(C, d, generator=g)
    W = (torch.randn(C, d, generator=g) / math.sqrt(d)).to(dev)
    bias = (torch.randn(C, generator=g) * 0.1).to(dev)
    y = torch.randint(0, C, (B,), generator=g)
    H = (means[y] + torch.randn(B, d, generator=g)).to(hdtype).to(dev)
    means = means.to(dev)
    kept = torch.arange(C, device=dev)
    K = C
    ndtype = F64 if dev.type == "cpu" else torch.float32
    esz = 8 if ndtype == F64 else 4
    fits, fit_note = ctx.naive_fits(esz * (3 * B * K + 2 * B * C + (K + C) * d + B * d))
    case = f"B={B} C={C} d={d}{case_suffix}"
    naive_name = f"naive: dense B×C ({'f64' if ndtype == F64 else 'fp32'})"
    rows = {"naive": BenchRow("ncc", case, naive_name, size, kind="naive")}
    results: dict[str, Any] = {}
    res = ctx.run_naive(rows["naive"], fits, fit_note, lambda: _ncc_dense(H, means, kept, W, bias, ndtype))
    if res is not None:
        results["naive"] = res
    impls: list = [("torch: blocked (f64)", "fp64",
                    lambda: ncc_torch(H, means, kept, W, bias, precision="float64"), None),
                   # the default: float32 products, near-ties decided again in float64 (same decisions)
                   ("torch: f32 + f64 ties", "fp32", lambda: ncc_torch(H, means, kept, W, bias), None)]
    if ctx.use_triton:
        from lcfast.kernels.ncc import ncc_triton

        for prec, peak_key in (("ieee", "fp32"), ("tf32", "tf32"), ("bf16", "bf16")):
            impls.append((f"triton: {prec}", peak_key,
                          lambda p=prec: ncc_triton(H, means, kept, W, bias, precision=p), None))
    ctx.time_matrix_impls("ncc", case, size, 2.0 * B * d * (K + C), impls, rows, results)
    ctx.finish_case(rows, results, "torch: blocked (f64)", _ncc_agreement)
    if not fits and not case_suffix:
        free = 0.8 * free_bytes(dev)
        B2 = int((free - esz * (K + C) * d) // (esz * (3 * K + 2 * C + d)))
        B2 = max(64, min(B // 2, B2))
        B2 = 1 << int(math.log2(B2))
        ncc_family(ctx, {"B": B2, "C": C, "d": d}, case_suffix=", reduced")


FAMILIES = {"class_stats": class_stats_family, "pairwise": pairwise_family, "ncc": ncc_family}
