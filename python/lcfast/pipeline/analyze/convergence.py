"""Each metric against the number of train positions it was measured on (convergence.csv of
`lcfast measure`, beside its measurements.csv), and what that says about the measurement.

`load_convergence(inputs)` reads the convergence.csv beside each input table (None when there is
none: a paper table, an older measurement). `convergence_plots` draws `convergence_<metric>.png`:
the metric against n_positions on a log axis, one line per (model, checkpoint, layer) with ±1 SE
bars. `convergence_summary` says per metric whether it is stable at the size used (the last
doubling moved it by less than 2 SE: lcfast.pipeline.convergence) and roughly how many positions
it needs (the smallest size from which every doubling did), over every measured row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CONVERGENCE_FILE = "convergence.csv"
PLOT_PREFIX = "convergence_"


def load_convergence(inputs) -> pd.DataFrame | None:
    """The convergence.csv rows beside the input tables (a `source` column names the table), or None."""
    frames = []
    for p in inputs:
        c = Path(p).with_name(CONVERGENCE_FILE)
        if Path(p).name != CONVERGENCE_FILE and c.is_file():
            try:
                df = pd.read_csv(c)
            except (ValueError, OSError):  # unreadable: the analysis stands without it (said in the notes)
                continue
            if {"metric", "n_positions", "value"} <= set(df.columns) and len(df):
                frames.append(df.assign(source=str(c)))
    return pd.concat(frames, ignore_index=True) if frames else None


def _groups(conv: pd.DataFrame):
    keys = [k for k in ("source", "model", "checkpoint", "layer") if k in conv.columns]
    return conv.groupby(keys, dropna=False, sort=False) if keys else [((), conv)]


def convergence_summary(conv: pd.DataFrame) -> list[dict]:
    """Per metric: {"metric", "rows", "stable" (rows stable at the size used), "unknown" (rows where
    it cannot be said), "n_max" (the largest size), "needs" (median over the rows that settled of the
    size they need; None when none did)}, in the order the metrics first appear."""
    from lcfast.pipeline.convergence import needed_positions

    per: dict[str, dict] = {}
    for _, g in _groups(conv):
        rows = [{"metric": r.metric, "n_positions": int(r.n_positions), "value": float(r.value),
                 "se": (float(r.se) if "se" in g.columns and pd.notna(r.se) else None)}
                for r in g.itertuples() if pd.notna(r.value) and pd.notna(r.n_positions)]
        for k, v in needed_positions(rows).items():
            s = per.setdefault(k, {"metric": k, "rows": 0, "stable": 0, "unknown": 0, "n_max": 0, "_needs": []})
            s["rows"] += 1
            s["stable"] += v["stable"] is True
            s["unknown"] += v["stable"] is None
            s["n_max"] = max(s["n_max"], int(v["n_max"]))
            if v["needs"] is not None:
                s["_needs"].append(int(v["needs"]))
    out = []
    for s in per.values():
        needs = s.pop("_needs")
        s["needs"] = int(np.median(needs)) if needs else None
        out.append(s)
    return out


def convergence_plots(conv: pd.DataFrame, out_dir: Path, stage, metrics: list[str] | None = None) -> list[Path]:
    """`convergence_<metric>.png` for every metric with ≥ 2 sizes, drawn into `stage`."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from lcfast.pipeline.analyze.plots import _safe

    plots = []
    names = list(dict.fromkeys(conv["metric"]))
    for m in names if metrics is None else [m for m in names if m in metrics]:
        sub = conv[conv["metric"] == m]
        if sub["n_positions"].nunique() < 2:
            continue
        p = Path(out_dir) / f"{PLOT_PREFIX}{_safe(m)}.png"
        fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=100)
        try:
            for key, g in _groups(sub):
                g = g.sort_values("n_positions")
                label = "/".join(str(v) for v in (key if isinstance(key, tuple) else (key,))[1:]
                                 if v is not None and v == v)
                se = g["se"].to_numpy(dtype=np.float64) if "se" in g.columns else None
                ax.errorbar(g["n_positions"], g["value"], yerr=None if se is None else np.nan_to_num(se),
                            marker="o", ms=3, capsize=2, lw=1, label=label or None)
            ax.set_xscale("log")
            ax.set_xlabel("train positions measured (nested random subsamples)")
            ax.set_ylabel(m)
            ax.set_title(f"{m} against the amount of data (±1 SE)", fontsize=10)
            if len(ax.get_lines()) <= 12 and ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=7)
            fig.savefig(stage.path(p), format="png", bbox_inches="tight")
        finally:
            plt.close(fig)
        plots.append(p)
    return plots


__all__ = ["load_convergence", "convergence_summary", "convergence_plots", "CONVERGENCE_FILE", "PLOT_PREFIX"]
