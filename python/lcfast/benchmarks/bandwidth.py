"""`ClassStats.update` against the machine's memory bandwidth (bench/bench_classstats_bandwidth.py):
the update's bandwidth over its minimum traffic, next to a plain copy of the same bytes."""

from __future__ import annotations

import os
import statistics

import torch

from .harness import zipf_labels
from .timing import time_median


def classstats_min_bytes(B: int, d: int, touched: int, h_bytes: int = 4, with_ref: bool = True) -> int:
    """Minimum memory traffic of one in-place ClassStats.update: H read once, the labels, and per
    class present in the batch a read-modify-write of its float64 Σ(h − r) row and of n, Σ‖·‖²
    (+ a read of its reference row r_c when `with_ref`; the same definition as `lcfast bench`)."""
    per_class = (3 if with_ref else 2) * d * 8 + 6 * 8
    return B * d * h_bytes + B * 8 + touched * per_class


def classstats_bandwidth(
    C: int = 8192,
    d: int = 256,
    B: int = 16384,
    labels: str = "uniform",
    mode: str = "one-pass",
    threads: int = 1,
    rounds: int = 5,
    min_run_time: float = 0.3,
    h_dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict:
    """Time `ClassStats.update` (torch backend, CPU) and a plain tensor copy of comparable traffic,
    interleaved `rounds` times in this process, and return their bandwidths and ratio.

    mode: "one-pass" (the streaming accumulator, references already set: the steady state),
    "two-pass" (`ClassStats.second_pass`: references fixed to the means) or "covariance"
    (one-pass + the d×d within-class scatter, which adds 2·B·d² flops: compute-, not memory-bound).
    The copy moves a float32 tensor of half the update's minimum traffic into another (read + write
    = the same byte count). Each round times both back to back (medians of blocked autoranges), so
    a load change on a shared machine hits both; the ratio is taken per round, then the median.
    """
    from lcfast.stats.classstats import ClassStats

    if mode not in ("one-pass", "two-pass", "covariance"):
        raise ValueError(f"mode must be one-pass, two-pass or covariance, got {mode!r}")
    g = torch.Generator().manual_seed(seed)
    if labels == "uniform":
        Y = torch.randint(0, C, (B,), generator=g)
    elif labels == "zipf":
        Y = zipf_labels(B, C, 1.1, g)
    else:
        raise ValueError(f"labels must be uniform or zipf, got {labels!r}")
    mu = torch.randn(C, d, generator=g) * 3
    H = (mu[Y] + torch.randn(B, d, generator=g)).to(h_dtype)
    touched = int(torch.unique(Y).numel())
    min_bytes = classstats_min_bytes(B, d, touched, H.element_size())
    st = ClassStats(C, d, covariance=mode == "covariance")
    st.update(H, Y, backend="torch")  # references set, workspace allocated: the steady state
    if mode == "two-pass":
        st = ClassStats.second_pass(st.means)
        st.update(H, Y, backend="torch")
    src = torch.randn(max(min_bytes // 4 // 2, 1), generator=g)
    dst = torch.empty_like(src)
    copy_bytes = 2 * src.numel() * src.element_size()

    def update():
        st.update(H, Y, backend="torch")

    def copy():
        dst.copy_(src)

    per_round = []
    load_start = os.getloadavg()
    for _ in range(rounds):
        tu = time_median(update, min_run_time, threads)
        tc = time_median(copy, min_run_time, threads)
        per_round.append({"update_s": tu, "copy_s": tc, "update_gbs": min_bytes / tu / 1e9,
                          "copy_gbs": copy_bytes / tc / 1e9, "ratio": (min_bytes / tu) / (copy_bytes / tc)})
    med = lambda k: statistics.median(r[k] for r in per_round)
    out = {
        "C": C, "d": d, "B": B, "labels": labels, "mode": mode, "threads": threads,
        "h_dtype": str(h_dtype).replace("torch.", ""),
        "touched_classes": touched,
        "min_bytes": min_bytes,
        "min_bytes_without_ref_rows": classstats_min_bytes(B, d, touched, H.element_size(), with_ref=False),
        "copy_bytes": copy_bytes,
        "update_s": med("update_s"), "copy_s": med("copy_s"),
        "update_gbs": med("update_gbs"), "copy_gbs": med("copy_gbs"), "ratio": med("ratio"),
        "rounds": per_round,
        "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
    }
    if mode == "covariance":
        out["cov_gflops"] = 2 * B * d * d / out["update_s"] / 1e9
    return out
