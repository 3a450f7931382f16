"""What the demo's report says in words: the findings (does the sweep go the paper's way?), which
metrics are plotted and why, tracked against exact statistics, and the throughputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lcfast.pipeline.collect.summary import CollectSummary


def _spearman(x, y) -> tuple[float | None, float | None]:
    import numpy as np
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.unique(x[ok]).size < 2 or np.unique(y[ok]).size < 2:
        return None, None
    rho, p = spearmanr(x[ok], y[ok])
    return float(rho), float(p)


def _p(p, rho, n) -> str:
    """`= 0.012`, or for a perfect rank correlation the exact permutation p (see format_p)."""
    from lcfast.pipeline.analyze import format_p

    s = format_p(p, ".3g", rho, n)
    if s.startswith("<"):
        return s
    return f"= 2/{n}! = {s}" if p == 0 else f"= {s}"


def findings(df) -> tuple[list[str], dict]:
    """Plain-language findings of a demo sweep (final checkpoints): does it go the paper's way?"""
    notes: list[str] = []
    facts: dict = {}
    final = df[df["is_final"]] if "is_final" in df.columns else df
    n = len(final)
    rho, p = _spearman(final["val_loss"], final["nc1_cdnv"])
    facts["spearman_val_loss_cdnv"] = rho
    facts["spearman_val_loss_cdnv_p"] = p
    if rho is None:
        notes.append(f"Spearman ρ(val_loss, nc1_cdnv) is undefined over these {n} models (too few distinct values).")
    else:
        match = rho > 0
        facts["direction_matches_paper"] = bool(match)
        notes.append(
            f"Spearman ρ(val_loss, nc1_cdnv) = {rho:+.3f} (p {_p(p, rho, n)}, {n} final models): "
            + ("the paper's direction — models with lower validation loss have lower CDNV (more collapse)."
               if match else
               "NOT the paper's direction — here lower validation loss does not come with lower CDNV.")
        )
        if p == 0 and abs(rho) >= 1 - 1e-12 and n <= 170:  # scipy's 0 for |ρ| = 1: the exact p (format_p)
            import math

            p = 2 / math.factorial(n)
        if match and p is not None and p > 0.05:
            notes.append(f"With {n} models the correlation is not significant at 5%; the direction is suggestive only.")
    rp, _ = _spearman(final["n_params"], final["val_loss"])
    re_, _ = _spearman(final["epochs"], final["val_loss"])
    facts["spearman_n_params_val_loss"] = rp
    facts["spearman_epochs_val_loss"] = re_
    if rp is not None:
        notes.append(f"Size: Spearman ρ(n_params, val_loss) = {rp:+.3f} "
                     + ("(larger models reach lower loss)." if rp < 0
                        else "(larger models do NOT reach lower loss here)."))
    if re_ is not None:
        notes.append(f"Training: Spearman ρ(epochs, val_loss) = {re_:+.3f} "
                     + ("(longer training lowers loss)." if re_ < 0
                        else "(longer training does NOT lower loss here)."))
    rc, _ = _spearman(final["n_params"], final["nc1_cdnv"])
    if rc is not None:
        notes.append(f"Spearman ρ(n_params, nc1_cdnv) = {rc:+.3f} "
                     + ("(larger models collapse more)." if rc < 0
                        else "(larger models do not collapse more here)."))
    if "nc4_agreement" in final.columns:
        ra, _ = _spearman(final["val_loss"], final["nc4_agreement"])
        if ra is not None:
            notes.append(f"NC4: Spearman ρ(val_loss, nc4_agreement) = {ra:+.3f} "
                         + ("(better models agree more with the nearest class mean, as in the paper)." if ra < 0
                            else "(unlike the paper, better models do not agree more with the nearest class mean)."))
    dev = df[~df["is_final"]] if "is_final" in df.columns else df.iloc[0:0]
    if len(dev):
        for model, g in df[df["model"].isin(dev["model"].unique())].groupby("model"):
            g = g.sort_values("epochs")
            traj = ", ".join(f"e{int(e)}: {c:.3g}" for e, c in zip(g["epochs"], g["nc1_cdnv"]))
            notes.append(f"Over training, {model}'s nc1_cdnv goes {traj}.")
    notes.append(
        "This is a miniature: tiny models, a synthetic corpus and minutes of CPU training; the paper's sweep "
        "trained ~230 GPT-Neo models on TinyStories for up to 10 epochs. Treat agreement as a smoke test of the "
        "pipeline's science, not as a replication."
    )
    return notes, facts


#: one headline metric per property, as the paper plots them: NC1, NC4, GNC2, NC2 (equinorm,
#: equiangularity), NC3; the demo adds the best-fitting metric when it is not among them
_KEY_METRICS = ["nc1_cdnv", "nc4_agreement", "gnc2_log_var", "nc2_norm_cov", "nc3_dual_error", "nc2_interference_var"]
#: the metrics drawn over training (analysis_over_training/), besides val_loss
OVER_TRAINING = ["nc1_cdnv", "nc4_agreement"]


def plotted_metrics(corr) -> tuple[list[str], str | None]:
    """(the metrics the demo plots against val_loss, the best-fitting metric when it was added):
    the headline metric of each property, and the one with the highest R² if it is not one of them."""
    have = list(corr["metric"])
    chosen = [m for m in _KEY_METRICS if m in have]
    fitted = corr.dropna(subset=["r2"])
    best = str(fitted.iloc[0]["metric"]) if len(fitted) else None  # sorted by R²
    if best is not None and best not in chosen:
        return chosen + [best], best
    return chosen, None


def plots_note(corr, tracked: list[str], tracking: bool = False) -> str:
    """What report.md says about its plots: which metrics, and why these."""
    chosen, best = plotted_metrics(corr)
    r2 = dict(zip(corr["metric"], corr["r2"]))
    heads = [m for m in chosen if m != best]
    text = ("The scatter plots show val_loss against one headline metric per property, as the paper plots "
            "them: " + ", ".join(f"`{m}`" for m in heads) + ".")
    if best is not None:
        text += (f" `{best}` is added because it fits val_loss best here (R² {r2[best]:.3f}); it is not one "
                 "of the headline metrics.")
    text += (" Every other metric's fit is in the correlation table above (and analysis/correlations.csv); "
             "`lcfast analyze measurements.csv --out DIR` draws them all. Each point is a model: colour = "
             "parameters, marker = layers, hollow = the shorter training.")
    over = " and ".join(f"`{m}`" for m in OVER_TRAINING)
    if tracking:
        text += (f" The over-training plots show {over} against the epoch: a line per model tracked during "
                 "training (`lcfast train --track-nc`), and black-edged points where a checkpoint was collected "
                 "exactly" + (f" (every epoch of {', '.join(tracked)})" if tracked else "") + ".")
    elif tracked:
        text += f" The over-training plots follow {', '.join(tracked)}, measured after every epoch: val_loss, {over}."
    return text


def tracking_notes(runs_dir: Path, names: list[str], final_epochs: dict, df) -> list[str]:
    """Tracked vs exact at each model's last checkpoint: the row of nc_track.csv at the end of its
    last epoch (the statistics of its last interval) against `collect` of that checkpoint."""
    import pandas as pd

    parts, n_rows, every = [], 0, set()
    for n in names:
        f = runs_dir / n / "nc_track.csv"
        ex = df[(df["model"] == n) & (df["epochs"] == final_epochs.get(n))]
        if not f.is_file() or not len(ex):
            continue
        t = pd.read_csv(f)
        end = t[t["epoch"] == final_epochs[n]]
        if not len(end):
            continue
        n_rows += len(t)
        every.update(int(v) for v in t["interval_steps"])
        r, e = end.iloc[-1], ex.iloc[-1]
        parts.append(f"{n} nc1_cdnv {r['nc1_cdnv']:.3g} vs {e['nc1_cdnv']:.3g}, nc4_agreement "
                     f"{r['nc4_agreement']:.3g} vs {e['nc4_agreement']:.3g}")
    if not parts:
        return []
    return [f"Tracked during training (train --track-nc; {n_rows} rows of nc_track.csv, intervals of "
            f"{max(every)} steps): the curves of analysis_over_training/. Tracked vs exact (collect) at each "
            "model's last checkpoint: " + "; ".join(parts) + ". Tracked statistics come from the last interval's "
            "training batches while the weights moved, not from the frozen checkpoint over the whole train "
            "shard: read them as a trajectory, the exact points as the measurement (README: tracked vs exact)."]


def speed_summary(trained: dict[str, dict], collected: list[CollectSummary], workers: int) -> dict:
    """Throughputs for the report: training tokens/s per model; collection tokens/s and the cost of
    the statistics relative to the model forward (wall and, on CPU, CPU time), per pass kind."""
    train = {k: v.get("tokens_per_s") for k, v in sorted(trained.items())}
    fresh = [s for s in collected if not s.passes["train"].reused] or collected

    def tot(kind: str, key: str) -> float:
        return sum(float(getattr(s.passes[kind], key) or 0.0) for s in fresh if kind in s.passes)

    tok = tot("train", "tokens") + tot("val", "tokens")
    wall = tot("train", "wall_s") + tot("val", "wall_s")

    def share(kind: str, cpu: bool = False) -> float | None:
        f, st = tot(kind, "forward_cpu_s" if cpu else "forward_s"), tot(kind, "stats_cpu_s" if cpu else "stats_s")
        return st / f if f > 0 else None

    return {
        "train_tokens_per_s": train,
        "collect_tokens_per_s": tok / wall if wall > 0 else None,
        "collect_train_tokens_per_s": (tot("train", "tokens") / tot("train", "wall_s")
                                       if tot("train", "wall_s") > 0 else None),
        "class_stats_share_of_forward": share("train"),
        "class_stats_share_of_forward_cpu": share("train", cpu=True),
        "ncc_share_of_val_forward": share("val"),
        "ncc_share_of_val_forward_cpu": share("val", cpu=True),
        "collect_checkpoints": len(fresh),
        "processes": workers,
    }


def speed_notes(speed: dict) -> list[str]:
    out = []
    tr = {k: v for k, v in speed["train_tokens_per_s"].items() if isinstance(v, (int, float))}
    if tr:
        how = f", {speed['processes']} processes of one thread each" if speed["processes"] > 1 else ""
        out.append(f"Training throughput (tokens/s{how}): " + ", ".join(f"{k} {v:,.0f}" for k, v in tr.items()) + ".")
    if speed["collect_tokens_per_s"]:
        def pct(v):
            return f"{v:.1%}" if v is not None else "n/a"

        out.append(
            f"Collection: {speed['collect_tokens_per_s']:,.0f} tokens/s per process over "
            f"{speed['collect_checkpoints']} "
            f"checkpoint(s) (train pass {speed['collect_train_tokens_per_s']:,.0f} tokens/s). The class-statistics "
            f"accumulation costs {pct(speed['class_stats_share_of_forward'])} of the feature forward in wall time "
            f"({pct(speed['class_stats_share_of_forward_cpu'])} in CPU time); the NC4 decisions (nearest of "
            f"all kept class means and the LM-head argmax, float64) cost {pct(speed['ncc_share_of_val_forward'])} "
            "of the val "
            "forward — with these tiny models the forward itself is very cheap, "
            "so the ratios overstate what a real model sees."
        )
    return out
