"""The per-class view of an analysis: within-class variability against context entropy.

When a measurements table has a per_class.parquet beside it (`lcfast measure` writes one; the demo
keeps it in measure/), `per_class_view` reads the rows of the table's models and checkpoints and gives

* per (model, checkpoint) and context order k: Spearman ρ between the classes' context entropy
  h_k(c) and their variability — `cdnv_nearest` (σ² over the squared distance to the nearest class
  mean: the per-class NC1, the headline) and `var_rel` (σ²_c / Tr Σ_B) — over the kept classes with
  finite values (per_class_correlations.csv);
* the classes binned by context entropy (fixed edges in bits, the same for every model): count and
  median variability per bin (per_class_bins.csv);
* how ρ changes with model size (Spearman of ρ against n_params over the final checkpoints, with 3
  or more models) and over training (ρ of one architecture — same n_params — at each epoch measured);
* `per_class_variability.png`: median variability per entropy bin, one line per model, and ρ over
  training / against size;
* `summary_lines`: what the data show in a few sentences, including when they show nothing.

The classes are weighted equally (the relation is about classes, not positions).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lcfast.pipeline.per_class import PER_CLASS_FILE

#: bin edges of the context entropy, bits (the last bin is open)
BIN_EDGES = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, math.inf)
VARIABILITY = ("cdnv_nearest", "var_rel")
HEADLINE = "cdnv_nearest"
HEADLINE_ORDER = 1
#: |ρ| below this, or p above P_LEVEL, reads as "no relation"
RHO_SMALL = 0.1
P_LEVEL = 0.05
CORR_FILE = "per_class_correlations.csv"
BINS_FILE = "per_class_bins.csv"
PLOT_FILE = "per_class_variability.png"


def find_per_class(csv_paths) -> Path | None:
    """The per_class.parquet beside the first table that has one (or in its measure/ folder: the demo)."""
    for p in csv_paths:
        for cand in (Path(p).parent / PER_CLASS_FILE, Path(p).parent / "measure" / PER_CLASS_FILE):
            if cand.is_file():
                return cand
    return None


def _orders(pc: pd.DataFrame) -> list[int]:
    return sorted(int(c.rsplit("_", 1)[1]) for c in pc.columns if c.startswith("ctx_entropy_"))


def _spearman(x, y) -> tuple[float, float, int]:
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m = np.isfinite(x) & np.isfinite(y)
    n = int(m.sum())
    if n < 3 or np.ptp(x[m]) == 0 or np.ptp(y[m]) == 0:
        return math.nan, math.nan, n
    r = stats.spearmanr(x[m], y[m])
    return float(r.statistic), float(r.pvalue), n


def _partial(x, y, z) -> float:
    """Partial Spearman ρ of x and y given z (ranks): whether the relation survives the class's
    frequency, which drives both the sampling noise of σ²_c and how often its contexts were seen."""
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    m = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)  # one set of classes for all three
    x, y, z = x[m], y[m], z[m]
    rxy, _, _ = _spearman(x, y)
    rxz, _, _ = _spearman(x, z)
    ryz, _, _ = _spearman(y, z)
    den = math.sqrt(max((1 - rxz**2) * (1 - ryz**2), 0.0))
    return (rxy - rxz * ryz) / den if den > 0 and math.isfinite(rxy) else math.nan


def per_class_view(pc: pd.DataFrame, models: pd.DataFrame | None = None) -> dict:
    """The view of a per-class table (the long frame of per_class.parquet).

    Args:
        pc: per_class.parquet's rows (model, checkpoint, epochs, n_params, id, kept, ctx_entropy_k,
            cdnv_nearest, var_rel, …).
        models: the analysed table (model, checkpoint columns): only its (model, checkpoint) rows of
            `pc` are used for the size comparison ("final" checkpoints); None: the last epoch of each model.

    Returns {"correlations": DataFrame (model, checkpoint, epochs, n_params, order, variability,
    spearman_rho, p_value, n, final, partial_rho_given_n), "bins": DataFrame (model, checkpoint, epochs,
    n_params, final, bin, lo, hi, classes, median cdnv_nearest, median var_rel), "size": {rho, p, n} or
    None, "training": [{n_params, epochs, rho, models}] (ρ of one architecture at each epoch measured: its
    checkpoints or runs trained longer), "lines": [str]}.
    """
    pc = pc[pc["kept"]].copy()
    for c in ("epochs", "n_params"):
        pc[c] = pd.to_numeric(pc.get(c), errors="coerce")
    if models is not None and {"model", "checkpoint"} <= set(models.columns):
        final_keys = set(zip(models["model"].astype(str), models["checkpoint"].astype(str)))
    else:
        last = pc.groupby("model")["epochs"].transform("max")
        final_keys = set(zip(pc.loc[pc["epochs"] == last, "model"], pc.loc[pc["epochs"] == last, "checkpoint"]))
    orders = _orders(pc)
    rows, bins = [], []
    edges = np.array(BIN_EDGES)
    for (model, ck), g in pc.groupby(["model", "checkpoint"], sort=False):
        key = dict(model=model, checkpoint=ck, epochs=g["epochs"].iloc[0], n_params=g["n_params"].iloc[0],
                   final=(str(model), str(ck)) in final_keys)
        for k in orders:
            for v in VARIABILITY:
                rho, p, n = _spearman(g[f"ctx_entropy_{k}"], g[v])
                rows.append({**key, "order": k, "variability": v, "spearman_rho": rho, "p_value": p, "n": n,
                             "partial_rho_given_n": _partial(g[f"ctx_entropy_{k}"], g[v], g["n"])
                             if "n" in g.columns else math.nan})
        h = g[f"ctx_entropy_{HEADLINE_ORDER}"].to_numpy(dtype=np.float64)
        idx = np.searchsorted(edges, h, side="right") - 1
        for b in range(len(edges) - 1):
            sel = g[(idx == b) & np.isfinite(h)]
            if len(sel):
                bins.append({**key, "bin": b, "lo": edges[b], "hi": edges[b + 1], "classes": len(sel),
                             **{f"median_{v}": float(sel[v].median()) for v in VARIABILITY}})
    corr = pd.DataFrame(rows)
    view = {"correlations": corr, "bins": pd.DataFrame(bins), "size": None, "training": [], "lines": []}
    if corr.empty:
        view["lines"] = ["No kept class has a context entropy: nothing to relate."]
        return view
    head = corr[(corr["order"] == HEADLINE_ORDER) & (corr["variability"] == HEADLINE)]
    fin = head[head["final"]]
    if fin["n_params"].nunique() >= 3:
        rho, p, n = _spearman(fin["n_params"], fin["spearman_rho"])
        view["size"] = {"rho": rho, "p": p, "n": n}
    # over training: the same architecture (n_params) at more epochs — a model's own checkpoints, or
    # the runs of a sweep trained for longer
    for n_params, g in head.dropna(subset=["n_params", "epochs"]).groupby("n_params", sort=True):
        g = g.sort_values(["epochs", "final"]).drop_duplicates("epochs", keep="last")
        if len(g) >= 2:
            view["training"].append({"n_params": int(n_params), "epochs": [float(e) for e in g["epochs"]],
                                     "rho": [float(r) for r in g["spearman_rho"]],
                                     "models": [str(m) for m in g["model"]]})
    view["lines"] = summary_lines(view)
    return view


def _shows(rho: float, p: float) -> bool:
    return math.isfinite(rho) and math.isfinite(p) and abs(rho) >= RHO_SMALL and p < P_LEVEL


def summary_lines(view: dict) -> list[str]:
    """What the view shows, in sentences (for the report and the terminal); says so when nothing."""
    corr = view["correlations"]
    head = corr[(corr["order"] == HEADLINE_ORDER) & (corr["variability"] == HEADLINE)]
    fin = head[head["final"]] if head["final"].any() else head
    fin = fin.sort_values(["n_params", "epochs", "model"], kind="stable")
    pos = [r for r in fin.itertuples() if _shows(r.spearman_rho, r.p_value) and r.spearman_rho > 0]
    neg = [r for r in fin.itertuples() if _shows(r.spearman_rho, r.p_value) and r.spearman_rho < 0]
    none = len(fin) - len(pos) - len(neg)
    # a model with several rows here (the revisions of a training history): each named with its checkpoint
    twice = set(fin["model"][fin["model"].duplicated()])

    def name(r) -> str:
        return f"{r.model}/{r.checkpoint}" if r.model in twice else str(r.model)

    rhos = ", ".join(f"{name(r)} ρ = {r.spearman_rho:+.2f} (p = {_p(r.p_value)}, {r.n} classes)"
                     for r in fin.itertuples())
    lines = [f"Spearman ρ between a class's context entropy (order {HEADLINE_ORDER}) and its CDNV to the nearest "
             f"class mean, per model: {rhos}."]
    if pos and not neg and not none:
        lines.append("In every model, classes that their context predicts less well stay more variable relative to "
                     "their nearest neighbour, as soft labels would limit collapse (a rank correlation across "
                     "classes: it does not say which way the cause runs).")
    elif pos:
        lines.append(f"{len(pos)} of {len(fin)} models show more variability for less predictable classes "
                     f"(ρ > 0, p < {P_LEVEL}); {len(neg)} the opposite, {none} no relation (|ρ| < {RHO_SMALL} or "
                     f"p ≥ {P_LEVEL}).")
    elif neg:
        lines.append(f"{len(neg)} of {len(fin)} models show *less* variability for less predictable classes "
                     f"(ρ < 0, p < {P_LEVEL}): the opposite of the soft-label expectation.")
    else:
        lines.append(f"The data show no relation: every |ρ| < {RHO_SMALL} or p ≥ {P_LEVEL}. Context ambiguity "
                     "does not explain which classes collapse here.")
    part = fin["partial_rho_given_n"].to_numpy(dtype=np.float64)
    if np.isfinite(part).any():
        lines.append("Given the class's train count (partial Spearman ρ, which removes what frequency explains of "
                     f"both): {_span(part)}.")
    more = corr[(corr["order"] != HEADLINE_ORDER) & (corr["variability"] == HEADLINE) & corr["final"]]
    for k, g in more.groupby("order"):
        lines.append(f"With order-{k} contexts: ρ {_span(g['spearman_rho'].to_numpy(dtype=np.float64))}.")
    if view["size"] is None:
        sizes = fin["n_params"].nunique()
        lines.append(f"{sizes} model size{'' if sizes == 1 else 's'}: no trend with size is computed (it takes 3).")
    if view["size"] is not None:
        s = view["size"]
        word = ("grows" if s["rho"] > 0 else "shrinks") if _shows(s["rho"], s["p"]) else "shows no trend"
        lines.append(f"With model size the relation {word} (Spearman of ρ against n_params: "
                     f"{s['rho']:+.2f}, p = {_p(s['p'])}, {s['n']} models).")
    for t in view["training"]:
        steps = " → ".join(f"{r:+.2f} (epoch {e:g})" for e, r in zip(t["epochs"], t["rho"]))
        lines.append(f"Over training, the {t['n_params']:,}-parameter models: ρ {steps}.")
    other = corr[(corr["order"] == HEADLINE_ORDER) & (corr["variability"] == "var_rel") & corr["final"]]
    other = other.sort_values(["n_params", "epochs", "model"], kind="stable")
    if len(other):
        lines.append("With σ²_c / Tr Σ_B as the variability instead (no nearest-neighbour distance): ρ "
                     + ", ".join(f"{r.spearman_rho:+.2f} ({name(r)})" for r in other.itertuples()) + ".")
    return lines


def _span(v: np.ndarray) -> str:
    """"+0.61" or "+0.61 to +0.70" over the finite values."""
    v = v[np.isfinite(v)]
    if not v.size:
        return "undefined"
    lo, hi = float(v.min()), float(v.max())
    return f"{lo:+.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:+.2f} to {hi:+.2f}"


def _p(p: float) -> str:
    from lcfast.pipeline.analyze.fit import format_p

    return format_p(p, ".2g")


def plot_view(view: dict, path: Path) -> bool:
    """per_class_variability.png at `path`: median CDNV to the nearest class per entropy bin (final
    checkpoints, one line per model, class counts at the points) and ρ over training per architecture.
    False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    b = view["bins"]
    if b.empty:
        return False
    fb = b[b["final"]] if b["final"].any() else b
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    cmap = plt.get_cmap("tab10")
    fb = fb.sort_values(["n_params", "epochs", "model", "bin"], kind="stable")
    counts_shown: dict[tuple, int] = {}
    for i, (model, g) in enumerate(fb.groupby("model", sort=False)):
        x = [(lo + (hi if math.isfinite(hi) else lo + 2)) / 2 for lo, hi in zip(g["lo"], g["hi"])]
        ax.plot(x, g[f"median_{HEADLINE}"], marker="o", color=cmap(i % 10), label=str(model))
        for xi, yi, n in zip(x, g[f"median_{HEADLINE}"], g["classes"]):
            if counts_shown.get(xi) != n:  # the same kept classes in every model: one count per bin
                counts_shown[xi] = n
                ax.annotate(str(n), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=7,
                            color=cmap(i % 10))
    ax.set_yscale("log")
    ax.set_xlabel(f"context entropy h_{HEADLINE_ORDER}(c), bits (bin centres; numbers: classes)")
    ax.set_ylabel("median CDNV to the nearest class mean")
    ax.set_title("variability against context entropy")
    ax.legend(fontsize=8)
    for i, t in enumerate(view["training"]):
        ax2.plot(t["epochs"], t["rho"], marker="o", color=cmap(i % 10), label=f"{t['n_params']:,} params")
    if view["training"]:
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "one epoch per architecture:\nno change over training to show", ha="center",
                 va="center", transform=ax2.transAxes, fontsize=9)
    from matplotlib.ticker import MaxNLocator

    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers here
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("Spearman ρ (entropy, CDNV)")
    ax2.set_title("the relation over training")
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return True


def load_view(csv_paths, data: pd.DataFrame) -> tuple[dict | None, Path | None]:
    """(view, parquet path) for the models of the analysed table `data`, or (None, None) without a
    per_class.parquet beside the inputs or without rows of those models in it."""
    path = find_per_class([Path(p) for p in csv_paths])
    if path is None:
        return None, None
    pc = pd.read_parquet(path)
    if "model" in data.columns:
        pc = pc[pc["model"].astype(str).isin(set(data["model"].astype(str)))]
    if pc.empty:
        return None, path
    return per_class_view(pc, data), path


def view_summary(view: dict, source: Path, out_dir: Path | None = None) -> dict:
    """The JSON-able part of a view (analysis.json's `per_class`; `dir`: where its files are)."""
    return {"source": str(source), "dir": str(out_dir) if out_dir is not None else None,
            "headline": {"order": HEADLINE_ORDER, "variability": HEADLINE},
            "lines": view["lines"], "size": view["size"], "training": view["training"],
            "files": [CORR_FILE, BINS_FILE]}
