"""`lcfast bench --sizes e2e`: the whole measurement (class statistics → NC4 → metrics), both
profiles, against the paper's own pipeline written the paper's way, with each stage's share and
the machine's GEMM floor measured in the same process.

What is timed (float64 inputs, Zipf training labels, in one process, interleaved so that load from
other processes hits every implementation alike; medians of `repeats` calls):

* lcfast, `measure_embeddings(..., profile="paper")` and `profile="canonical"`, whole calls;
* the same, stage by stage — class statistics (the ClassStats accumulation measure_embeddings
  runs), NC4 (the NCCStats accumulation), pairwise (`pairwise_sweep` on the kept centred means),
  the other metrics (measure_all minus pairwise);
* lcfast as before the float32 NC4 search (`ncc_torch(precision="float64")`), for the before/after;
* the paper pipeline twin (`paper_pipeline`): the three passes of rhubarbwu/neural-collapse's
  accumulators (one-hot matmul means, one-hot variance norms, a B×C distance and logit matrix per
  batch) and the analysis of rhubarbwu/linguistic-collapse (C×C grids, pairwise differences
  materialised tile by tile), written here from the definitions in docs/metrics.md, and checked
  against lcfast's paper profile (every column within `AGREE_REL`, hits exactly);
* the floor: the GEMMs the measurement cannot avoid at this machine's float64 / float32 GEMM rate
  and one read of the training features at its read bandwidth, all measured in this run.

Floor model (docs in the JSON): NC4 = 2·n_val·(K_means + C)·d flops at the float32 rate (one
product with the kept (paper: all C) means, one with the LM head; decisions are float64 via the
refinement in lcfast.stats.ncc); pairwise = 2·K²·d at the float64 rate (one Gram of the centred
means; the etf and dual errors through the d×d products MᵀM and WᵀW, 4·K·d², as "rest"); class
statistics = one read of H
(canonical: plus the within-class covariance for nc1_pinv, a symmetric rank-N update, N·d² flops).
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

F64 = torch.float64

#: the e2e problem sizes: C classes, d, n_train, n_val
E2E_SIZES = {
    "e2e": dict(C=4096, d=256, n_train=163840, n_val=16384),
    "e2e-large": dict(C=32768, d=256, n_train=655360, n_val=32768),
    "e2e-tiny": dict(C=300, d=32, n_train=6000, n_val=1000),
}
#: the paper twin and lcfast's paper profile must agree this closely (relative), hits exactly
AGREE_REL = 1e-9


def make_problem(C: int, d: int, n_train: int, n_val: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """float64 features H [n_train, d] / H_val [n_val, d] around class means, Zipf(1.1) labels
    (some classes unseen), an LM head W [C, d] aligned with the means plus noise, bias b [C]."""
    from .harness import zipf_labels

    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(C, d, generator=g, dtype=F64)
    Y = zipf_labels(n_train, C, generator=g)
    Yv = zipf_labels(n_val, C, generator=g)
    H = mu[Y] + 1.5 * torch.randn(n_train, d, generator=g, dtype=F64)
    Hv = mu[Yv] + 1.5 * torch.randn(n_val, d, generator=g, dtype=F64)
    W = mu + 0.8 * torch.randn(C, d, generator=g, dtype=F64)
    b = 0.1 * torch.randn(C, generator=g, dtype=F64)
    return dict(H=H, Y=Y, W=W, b=b, H_val=Hv, Y_val=Yv)


# ------------------------------------------------------------------------------------------------
# the paper's pipeline, the paper's way
# ------------------------------------------------------------------------------------------------


def _one_hot(y: torch.Tensor, C: int) -> torch.Tensor:
    return (y[:, None] == torch.arange(C)).to(F64)


def _upper_mean_var(grid_tiles: Callable[[int, int, int, int], torch.Tensor], K: int, tile: int):
    """Mean and population variance over i < j of a K×K grid computed tile by tile (two sweeps, as
    the paper's symm_reduce does over its materialised grid)."""
    tot, n = 0.0, 0
    for pass_ in (0, 1):
        acc = 0.0
        for i0 in range(0, K, tile):
            i1 = min(K, i0 + tile)
            for j0 in range(i0, K, tile):
                j1 = min(K, j0 + tile)
                g = grid_tiles(i0, i1, j0, j1)
                ii = torch.arange(i0, i1)[:, None]
                jj = torch.arange(j0, j1)[None, :]
                v = g[ii < jj]
                if pass_ == 0:
                    acc += float(v.sum())
                    n += v.numel()
                else:
                    acc += float(((v - tot) ** 2).sum())
        if pass_ == 0:
            tot = acc / n
        else:
            return tot, acc / n
    raise AssertionError  # pragma: no cover


def _mean_var1(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.var(correction=1))


def _etf(A: torch.Tensor) -> float:
    K = A.shape[0]
    E = (torch.eye(K, dtype=F64) - 1.0 / K) / math.sqrt(K - 1)
    return float(torch.linalg.matrix_norm(A / torch.linalg.matrix_norm(A) - E))


@torch.no_grad()
def paper_pipeline(H, Y, W, b, H_val, Y_val, n_classes: int, min_count: int = 1, batch: int = 4096,
                   tile: int = 128) -> dict[str, Any]:
    """The paper's columns (lcfast.metrics.PAPER_KEYS, bar degenerate_pairs) the paper's way:
    pass 1 class means by one-hot matmul per batch, pass 2 variance norms by one-hot matmul of
    squared differences, pass 3 NC4 over all C means through a B×C distance matrix and B×C logits
    per batch, then the analysis with the cdnv and log-kernel grids from materialised pairwise
    differences (tile × tile × d at a time). float64 throughout. Returns {column: value}."""
    C, d = n_classes, H.shape[1]
    eps = torch.finfo(F64).eps
    n = torch.zeros(C, dtype=F64)
    sums = torch.zeros(C, d, dtype=F64)
    for i in range(0, H.shape[0], batch):
        oh = _one_hot(Y[i : i + batch], C)
        n += oh.sum(0)
        sums += oh.T @ H[i : i + batch]
    means = sums / (n + eps)[:, None]
    vs = torch.zeros(C, dtype=F64)
    for i in range(0, H.shape[0], batch):
        y = Y[i : i + batch]
        oh = _one_hot(y, C)
        vs += (oh.T @ (H[i : i + batch] - means[y]) ** 2).sum(-1)
    var = vs / (n + eps)
    kept = n >= min_count
    mn = (means * means).sum(1)
    hits = torch.zeros(C, dtype=F64)
    totals = torch.zeros(C, dtype=F64)
    for i in range(0, H_val.shape[0], batch):
        h, y = H_val[i : i + batch], Y_val[i : i + batch]
        dist = (h * h).sum(1, keepdim=True) + mn - 2 * (h @ means.T)  # B×C
        logits = h @ W.T + (0 if b is None else b)  # B×C
        match = (dist.argmin(1) == logits.argmax(1)).to(F64)
        hits.index_add_(0, y, match)
        totals.index_add_(0, y, torch.ones_like(match))
    ids = kept.nonzero().squeeze(1)
    K = int(ids.numel())
    mu = means[ids]
    M = mu - mu.mean(0)
    v = var[ids]
    r: dict[str, Any] = {"n_classes": K, "n_samples": int(n[ids].sum())}
    norms = M.norm(dim=1)
    r["norms_mean"], r["norms_var"] = _mean_var1(norms)
    r["norms_log_mean"], r["norms_log_var"] = _mean_var1(norms.log())
    G = M @ M.T
    r["etf_error"] = _etf(G)
    up = torch.ones(K, K, dtype=torch.bool).triu(1)
    inter = G[up]
    r["interfere_mean"], r["interfere_var"] = float(inter.mean()), float(inter.var(correction=0))

    def cdnv(i0, i1, j0, j1):
        diff = M[i0:i1, None, :] - M[None, j0:j1, :]
        return (v[i0:i1, None] + v[None, j0:j1]) / 2 / (diff * diff).sum(-1) ** 2

    U = M / norms[:, None]

    def logk(i0, i1, j0, j1):
        return -((U[i0:i1, None, :] - U[None, j0:j1, :]).norm(dim=-1)).log()

    r["cdnv"] = _upper_mean_var(cdnv, K, tile)[0]
    r["log_kern_mean"], r["log_kern_var"] = _upper_mean_var(logk, K, tile)
    Wk = W[ids]
    r["dual_error"] = _etf(Wk @ M.T)
    dots = (Wk * M).sum(1)
    wn = Wk.norm(dim=1)
    r["simdot_mean"], r["simdot_var"] = _mean_var1(dots)
    r["simcos_mean"], r["simcos_var"] = _mean_var1(dots / (wn * norms))
    r["dists_mean"], r["dists_var"] = _mean_var1((Wk / wn[:, None] - U).norm(dim=1))
    r["hits"] = int(hits[ids].sum().round())
    r["misses"] = int(totals[ids].sum().round()) - r["hits"]
    return r


# ------------------------------------------------------------------------------------------------
# lcfast, whole and stage by stage
# ------------------------------------------------------------------------------------------------


def _stages(p: dict, profile: str, min_count: int = 1) -> dict[str, Callable[[], Any]]:
    """Callables running each stage of measure_embeddings(profile) on its own inputs (computed
    once here); the same calls measure_embeddings makes."""
    from lcfast.backend import DEGENERATE_TOL
    from lcfast.metrics.measure import _kept_classes, measure_all, profile_cdnv_power
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats
    from lcfast.stats.pairwise import pairwise_sweep

    paper = profile == "paper"
    H, Y, W, b, Hv, Yv = (p[k] for k in ("H", "Y", "W", "b", "H_val", "Y_val"))
    C, d = W.shape
    counts = torch.bincount(Y, minlength=C)
    kept = counts >= min_count
    if not paper and not bool(kept.all()):
        H, Y = H[kept[Y]], Y[kept[Y]]
    chunk = 32768

    def class_stats():
        st = ClassStats(C, d, covariance=not paper)
        for i in range(0, H.shape[0], chunk):
            st.update(H[i : i + chunk], Y[i : i + chunk])
        return st

    st = class_stats()

    def nc4():
        ncc = NCCStats(C, st.means, kept, W, b, all_classes=paper)
        for i in range(0, Hv.shape[0], chunk):
            ncc.update(Hv[i : i + chunk], Yv[i : i + chunk])
        return ncc

    ncc = nc4()
    power = profile_cdnv_power(profile, None)
    k = _kept_classes(st, ncc, min_count, DEGENERATE_TOL)
    return {
        "class_stats": class_stats,
        "nc4": nc4,
        "pairwise": lambda: pairwise_sweep(k.M, k.var, cdnv_power=power, tol=DEGENERATE_TOL, raw_dot=paper),
        "metrics": lambda: measure_all(st, W, b, ncc, min_count, profile=profile, table=False),
    }


def gemm_rates(n: int = 4096, d: int = 256, repeats: int = 5) -> dict[str, float]:
    """This machine's float64 and float32 GEMM rates (flop/s, median of `repeats`) on an n×d·d×n
    product — the shape of the NC4 and Gram work — and its read bandwidth (bytes/s, a sum over
    256 MB of float64)."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for name, dt in (("f64", F64), ("f32", torch.float32)):
        a = torch.randn(n, d, generator=g, dtype=dt)
        bt = torch.randn(d, n, generator=g, dtype=dt)
        a @ bt
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ bt
            ts.append(time.perf_counter() - t0)
        out[f"gemm_{name}_flops"] = 2.0 * n * n * d / statistics.median(ts)
    x = torch.randn(32 * 1024 * 1024, generator=g, dtype=F64)
    x.sum()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        ts.append(time.perf_counter() - t0)
    out["read_bytes_per_s"] = x.numel() * 8 / statistics.median(ts)
    return out


def floor_s(rates: dict, C: int, K: int, d: int, n_train: int, n_val: int, profile: str) -> dict[str, float]:
    """The floor of each stage in seconds (see the module docstring)."""
    k_means = C if profile == "paper" else K
    nc4 = 2.0 * n_val * (k_means + C) * d / rates["gemm_f32_flops"]
    pair = 2.0 * K * K * d / rates["gemm_f64_flops"]
    # the etf / dual errors need only the sum, square sum and trace of K×K products: through the
    # d×d products MᵀM and WᵀW (2·K·d² flops each), never a K×K matrix
    cross = 4.0 * K * d * d / rates["gemm_f64_flops"]
    stats = n_train * d * 8 / rates["read_bytes_per_s"]
    if profile != "paper":  # Σ_W for nc1_pinv: one symmetric rank-N update (syrk, N·d² flops)
        stats += n_train * d * d / rates["gemm_f64_flops"]
    return {"class_stats": stats, "nc4": nc4, "pairwise": pair, "rest": cross,
            "total": stats + nc4 + pair + cross}


def _median_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict]:
    """Each fn timed `repeats` times, round-robin (one call of each per round), so that a burst of
    load from other processes hits every implementation alike: {name: {median_s, times_s}}."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "times_s": v} for k, v in times.items()}


def _rel(a, b) -> float:
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    return abs(a - b) / max(abs(b), 1e-300)


def run_e2e(size: str = "e2e", repeats: int = 3, naive: bool = True, naive_repeats: int = 1,
            seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """The e2e report (format "lcfast.bench-e2e/1"): problem, threads, load averages, GEMM rates,
    per-profile whole and stage timings with floors and fractions, the before (float64 NC4) whole
    time, the paper twin's time, speed-ups and the agreement between lcfast and the twin."""
    from lcfast.metrics.embeddings import measure_embeddings
    from lcfast.stats import ncc as ncc_mod
    from lcfast.threads import describe

    say = log or (lambda s: None)
    sz = E2E_SIZES[size]
    C, d, n_train, n_val = sz["C"], sz["d"], sz["n_train"], sz["n_val"]
    load0 = os.getloadavg()
    say(f"problem C={C} d={d} n_train={n_train} n_val={n_val}, {torch.get_num_threads()} threads, load {load0}")
    p = make_problem(C, d, n_train, n_val, seed)
    K = int((torch.bincount(p["Y"], minlength=C) >= 1).sum())
    rates_start = gemm_rates(d=d)
    say(f"GEMM f64 {rates_start['gemm_f64_flops'] / 1e9:.0f} GFLOP/s, f32 {rates_start['gemm_f32_flops'] / 1e9:.0f}, "
        f"read {rates_start['read_bytes_per_s'] / 1e9:.1f} GB/s (at the start; the floor uses the interleaved ones)")
    args = (p["H"], p["Y"], p["W"], p["b"], p["H_val"], p["Y_val"])
    # the floor's own operations, timed in the same rounds as lcfast (the load changes during a run)
    hv32, w32 = p["H_val"].to(torch.float32), p["W"].to(torch.float32)
    wg = p["W"]
    probes = {
        "floor:gemm_f32": (lambda: hv32 @ w32.T, 2.0 * n_val * C * d),  # the NC4 product shape
        "floor:gemm_f64": (lambda: wg @ wg.T, 2.0 * C * C * d),  # the Gram shape
        "floor:read": (lambda: p["H"].sum(), n_train * d * 8.0),
    }

    def whole(profile):
        return lambda: measure_embeddings(*args, profile=profile)

    def before(profile):
        def fn():
            orig = ncc_mod.ncc_predict
            # NCCStats.update looks ncc_predict up in its module: every NC4 product in float64, as
            # lcfast was before the float32 search
            ncc_mod.ncc_predict = functools.partial(orig, precision="float64")
            try:
                return measure_embeddings(*args, profile=profile)
            finally:
                ncc_mod.ncc_predict = orig
        return fn

    fns = {"paper": whole("paper"), "canonical": whole("canonical"),
           "paper_before": before("paper"), "canonical_before": before("canonical")}
    results = {k: f() for k, f in fns.items()}  # warm-up, and the values compared below
    same_before = {prof: max((_rel(results[prof][k], results[prof + "_before"][k])
                              for k in results[prof] if results[prof][k] is not None), default=0.0)
                   for prof in ("paper", "canonical")}
    stage_fns = {}
    for prof in ("paper", "canonical"):
        for name, fn in _stages(p, prof).items():
            stage_fns[f"{prof}:{name}"] = fn
    say("timing lcfast (whole calls and stages, interleaved)")
    t = _median_interleaved({**fns, **stage_fns, **{k: f for k, (f, _) in probes.items()}}, repeats)
    rates = {"gemm_f32_flops": probes["floor:gemm_f32"][1] / t["floor:gemm_f32"]["median_s"],
             "gemm_f64_flops": probes["floor:gemm_f64"][1] / t["floor:gemm_f64"]["median_s"],
             "read_bytes_per_s": probes["floor:read"][1] / t["floor:read"]["median_s"]}
    report: dict[str, Any] = {
        "format": "lcfast.bench-e2e/1", "size": size, "problem": dict(sz, K_kept=K, seed=seed),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "threads_choice": describe(),
        "rates": rates, "rates_at_start": rates_start, "repeats": repeats, "profiles": {},
        "timing": "medians over round-robin repeats in one process (time.perf_counter)",
        "floor_model": __doc__.split("Floor model")[1].strip(),
        "nc4_before_is": "ncc_torch(precision='float64'): every NC4 product in float64 (lcfast before issue 24)",
        "before_after_max_rel_diff": same_before,
    }
    for prof in ("paper", "canonical"):
        fl = floor_s(rates, C, K, d, n_train, n_val, prof)
        st = {k.split(":")[1]: v["median_s"] for k, v in t.items() if k.startswith(prof + ":")}
        st["rest"] = st["metrics"] - st["pairwise"]
        total = t[prof]["median_s"]
        report["profiles"][prof] = {
            "whole_s": total, "whole_times_s": t[prof]["times_s"],
            "before_s": t[prof + "_before"]["median_s"],
            "stages_s": {k: st[k] for k in ("class_stats", "nc4", "pairwise", "rest")},
            "stages_share": {k: st[k] / total for k in ("class_stats", "nc4", "pairwise", "rest")},
            "floor_s": fl, "over_floor": total / fl["total"],
            "stage_over_floor": {k: st[k] / fl[k] for k in ("class_stats", "nc4", "pairwise", "rest")},
            "values": results[prof],
        }
    report["canonical_over_paper"] = report["profiles"]["canonical"]["whole_s"] / report["profiles"]["paper"]["whole_s"]
    if naive:
        say("timing the paper pipeline twin (slow)")
        out: list = []
        tw = _median_interleaved({"paper_twin": lambda: out.append(paper_pipeline(*args, n_classes=C))},
                                 naive_repeats)
        twin = out[-1]
        mine = results["paper"]
        diffs = {k: _rel(mine.get(k), v) for k, v in twin.items()}
        ok = all(diffs[k] <= AGREE_REL for k in diffs if k not in ("hits", "misses", "n_classes", "n_samples")) and \
            all(mine[k] == twin[k] for k in ("hits", "misses", "n_classes", "n_samples"))
        report["paper_twin"] = {"time_s": tw["paper_twin"]["median_s"], "times_s": tw["paper_twin"]["times_s"],
                                "values": twin, "max_rel_diff": max(diffs.values()), "agrees": ok}
        for prof in ("paper", "canonical"):
            pr = report["profiles"][prof]
            pr["speedup_vs_paper_twin"] = tw["paper_twin"]["median_s"] / pr["whole_s"]
            pr["before_speedup_vs_paper_twin"] = tw["paper_twin"]["median_s"] / pr["before_s"]
    report["loadavg_start"], report["loadavg_end"] = load0, os.getloadavg()
    return report


def print_e2e(report: dict, console) -> None:
    """The e2e report as a few lines of text."""
    r = report
    pz = r["problem"]
    console.print(f"e2e: C={pz['C']} (kept {pz['K_kept']}), d={pz['d']}, train {pz['n_train']}, val {pz['n_val']}; "
                  f"{r['torch_threads']} threads; load {r['loadavg_start'][0]:.1f} → {r['loadavg_end'][0]:.1f}")
    rt = r["rates"]
    console.print(f"machine: GEMM f64 {rt['gemm_f64_flops'] / 1e9:.0f} GFLOP/s, f32 {rt['gemm_f32_flops'] / 1e9:.0f} "
                  f"GFLOP/s, read {rt['read_bytes_per_s'] / 1e9:.1f} GB/s")
    for prof, pr in r["profiles"].items():
        sp = f", {pr['speedup_vs_paper_twin']:.0f}× the paper pipeline" if "speedup_vs_paper_twin" in pr else ""
        console.print(f"{prof}: {pr['whole_s']:.3f} s (before {pr['before_s']:.3f} s){sp}; floor "
                      f"{pr['floor_s']['total']:.3f} s → {pr['over_floor']:.2f}× the floor")
        parts = ", ".join(f"{k} {v:.3f} s ({100 * pr['stages_share'][k]:.0f}%, {pr['stage_over_floor'][k]:.1f}× floor)"
                          for k, v in pr["stages_s"].items())
        console.print(f"  stages: {parts}")
    console.print(f"canonical / paper: {r['canonical_over_paper']:.2f}")
    if "paper_twin" in r:
        tw = r["paper_twin"]
        console.print(f"paper pipeline twin: {tw['time_s']:.2f} s; agrees with lcfast's paper profile: {tw['agrees']} "
                      f"(max rel diff {tw['max_rel_diff']:.1e})")
