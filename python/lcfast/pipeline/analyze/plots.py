"""The analysis' PNG plots: the target against each metric (scatter), each metric over training (one
line per model, or the curve tracked with `train --track-nc` with the exact checkpoints on it), and
each metric through depth (`collect --layers`). Drawn into a staging area and published together."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from lcfast.pipeline.analyze.result import SUMMARY_FILE, AnalysisResult


def _save_fig(fig, path) -> None:
    """PNG of `fig` written to `path` (a staged temporary: see `make_plots`)."""
    fig.savefig(path, format="png", bbox_inches="tight")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))


def _color_setup(data: pd.DataFrame):
    """(values, norm, cmap) for colouring by parameter count on a log scale, or None."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm

    if "n_params" not in data.columns:
        return None
    v = pd.to_numeric(data["n_params"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any():
        return None
    lo, hi = float(v[ok].min()), float(v[ok].max())
    if lo == hi:
        lo, hi = lo / 1.5, hi * 1.5
    return v, LogNorm(vmin=lo, vmax=hi), mpl.colormaps["viridis"]


def _count(v: float, _pos=None) -> str:
    """80k, 1.2M: parameter counts on a colour bar."""
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.3g}"


def _readable_log_axis(axis, lo: float, hi: float, fmt=None) -> None:
    """Plain tick labels on a log axis (0.25, 1.4 — never 2×10⁰), few enough not to overlap: the
    values 1, 2, 5 × 10^k in the range when there are 3 to 6 of them, else (a narrow range) a few
    evenly spaced round values, else (a wide one) powers of ten; no minor labels."""
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        LogLocator,
        MaxNLocator,
        NullFormatter,
        NullLocator,
    )

    fmt = fmt or (lambda v, _pos=None: f"{v:.3g}")
    if not (lo > 0 and hi > 0):
        return
    inside = [m * 10.0**k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
              for m in (1, 2, 5) if lo * 0.97 <= m * 10.0**k <= hi * 1.03]
    if 3 <= len(inside) <= 6:
        axis.set_major_locator(FixedLocator(inside))
    elif len(inside) > 6:
        axis.set_major_locator(LogLocator(base=10, numticks=6))
    else:
        ticks = [t for t in MaxNLocator(nbins=5, steps=[1, 1.5, 2, 2.5, 3, 5, 10]).tick_values(lo, hi)
                 if t > 0 and lo * 0.97 <= t <= hi * 1.03]
        if len(ticks) < 2:
            ticks = [float(f"{lo:.2g}"), float(f"{hi:.2g}")]
        axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(fmt))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


_MARKERS = ["o", "s", "^", "D", "v", "P"]


def _point_styles(data: pd.DataFrame, m: np.ndarray):
    """Marker of each row by its number of layers and fill by its training epochs (hollow: the fewer
    of two), with the legend entries saying so ({legend title: handles}); plain circles where a
    column is missing or has too many values to tell apart."""
    from matplotlib.lines import Line2D

    n = len(data)
    marker = np.array(["o"] * n, dtype=object)
    filled = np.ones(n, dtype=bool)
    legends: dict[str, list] = {}
    if "layers" in data.columns:
        lay = pd.to_numeric(data["layers"], errors="coerce").to_numpy(dtype=np.float64)
        kinds = sorted(set(lay[m & np.isfinite(lay)]))
        if 1 < len(kinds) <= len(_MARKERS):
            for k, mk in zip(kinds, _MARKERS):
                marker[lay == k] = mk
                legends.setdefault("layers", []).append(
                    Line2D([], [], ls="", marker=mk, color="gray", label=f"{int(k)}"))
    if "epochs" in data.columns:
        ep = pd.to_numeric(data["epochs"], errors="coerce").to_numpy(dtype=np.float64)
        kinds = sorted(set(ep[m & np.isfinite(ep)]))
        if len(kinds) == 2:
            filled = ep != kinds[0]
            for k, f in ((kinds[0], False), (kinds[1], True)):
                legends.setdefault("epochs of training", []).append(
                    Line2D([], [], ls="", marker="o", color="gray", markerfacecolor="gray" if f else "none",
                           label=f"{int(k)}"))
    return marker, filled, legends


def _legends_below(fig, ax, legends: dict[str, list]) -> None:
    """Titled legends side by side under the axes (they never hide a point)."""
    if not legends:
        return
    fig.subplots_adjust(bottom=0.22)
    box = ax.get_position()
    n = len(legends)
    for k, (title, handles) in enumerate(legends.items()):
        fig.legend(handles=handles, title=title or None, loc="lower center",
                   bbox_to_anchor=(box.x0 + box.width * (k + 0.5) / n, 0.0), ncol=len(handles), fontsize=9,
                   title_fontsize=9, frameon=False, handletextpad=0.3, columnspacing=1.0, markerscale=1.3)


def _scatter(data, metric, target, row, color, path: Path) -> None:
    """`target` against `metric` (log x axis where the fit is on ln(metric)), one point per model:
    colour = parameters, marker = layers, hollow = the shorter of two trainings; the fitted line."""
    import matplotlib.pyplot as plt

    x = pd.to_numeric(data[metric], errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(data[target], errors="coerce").to_numpy(dtype=np.float64)
    m = np.isfinite(x) & np.isfinite(y)
    marker, filled, legends = _point_styles(data, m)
    fig, ax = plt.subplots(figsize=(5.6, 4.7), dpi=100)
    try:
        if color is not None:
            v, norm, cmap = color
            rgba = np.array([cmap(norm(c)) if np.isfinite(c) and c > 0 else (0.75, 0.75, 0.75, 1.0) for c in v])
            if (m & ~(np.isfinite(v) & (v > 0))).any():
                legends.setdefault("", []).append(
                    plt.Line2D([], [], ls="", marker="o", color=(0.75, 0.75, 0.75), label="n_params unknown"))
        else:
            rgba = np.array([plt.matplotlib.colors.to_rgba("tab:blue")] * len(x))
        for mk in dict.fromkeys(marker[m]):
            for f in (True, False):  # hollow markers drawn last, filled ones translucent: a point never hides another
                sel = m & (marker == mk) & (filled == f)
                if sel.any():
                    ax.scatter(x[sel], y[sel], marker=mk, s=40, facecolors=rgba[sel] if f else "none",
                               edgecolors=rgba[sel], linewidths=1.4, alpha=0.7 if f else 1.0, zorder=2 if f else 3)
        if color is not None:
            from matplotlib.cm import ScalarMappable

            sm = ScalarMappable(norm=color[1], cmap=color[2])
            sm.set_array([])
            cb = fig.colorbar(sm, ax=ax, label="parameters")
            _readable_log_axis(cb.ax.yaxis, color[1].vmin, color[1].vmax, _count)
        if row["scale"] == "log":
            ax.set_xscale("log")
            _readable_log_axis(ax.xaxis, float(np.nanmin(x[m])), float(np.nanmax(x[m])))
        if np.isfinite(row["r2"]):
            if row["scale"] == "log":
                xs = np.geomspace(np.nanmin(x[m]), np.nanmax(x[m]), 100)
                ys = row["slope"] * np.log(xs) + row["intercept"]
            else:
                xs = np.linspace(np.nanmin(x[m]), np.nanmax(x[m]), 100)
                ys = row["slope"] * xs + row["intercept"]
            (fit,) = ax.plot(xs, ys, color="crimson", lw=1.2, label="on ln x" if row["scale"] == "log" else "linear")
            legends["fit"] = [fit]
        _legends_below(fig, ax, legends)
        ax.set_xlabel(f"{metric}" + (" (log scale)" if row["scale"] == "log" else ""))
        ax.set_ylabel(target)
        ax.set_title(f"{target} vs {metric}: R² = {row['r2']:.3f}, Spearman ρ = {row['spearman_rho']:+.3f}, "
                     f"n = {row['n']}", fontsize=9)
        ax.grid(alpha=0.3)
        _save_fig(fig, path)
    finally:
        plt.close(fig)


def epoch_axis(data: pd.DataFrame) -> pd.Series | None:
    """Epoch of each row: `epoch`, else `epochs` when it varies within a model, else a numeric checkpoint."""
    if "model" not in data.columns:
        return None
    if "epoch" in data.columns:
        e = pd.to_numeric(data["epoch"], errors="coerce")
        if e.notna().any():
            return e
    if "epochs" in data.columns:
        e = pd.to_numeric(data["epochs"], errors="coerce")
        if e.notna().any() and (e.groupby(data["model"]).nunique() > 1).any():
            return e
    if "checkpoint" in data.columns:
        ck = data["checkpoint"]
        e = pd.to_numeric(ck, errors="coerce")
        if e.isna().all():  # e.g. "epoch-3", "checkpoint_7"
            e = pd.to_numeric(ck.astype(str).str.extract(r"(\d+)(?!.*\d)")[0], errors="coerce")
        steps = step_axis(data)
        if steps is not None:  # a hub revision's stepN is a training step, drawn by `make_plots` on its own axis
            e = e.where(steps.isna())
        if e.notna().any():
            return e
    return None


def step_axis(data: pd.DataFrame) -> pd.Series | None:
    """Training step of each row (`step`: the stepN revisions of a hub model, `collect --revisions`),
    or None when no row has one."""
    if "model" not in data.columns or "step" not in data.columns:
        return None
    s = pd.to_numeric(data["step"], errors="coerce")
    return s if s.notna().any() else None


def _step_ticks(axis, x: pd.Series) -> None:
    """Step ticks that read plainly (0, 1k, 143k): the steps themselves when there are few, else 0
    and the powers of ten in the range; no minor ticks (on a symlog axis they crowd step 0)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    vals = sorted(set(float(v) for v in x))
    if len(vals) > 8:
        pos = [v for v in vals if v > 0]
        lo = max(pos[0], 1.0) if pos else 1.0
        vals = ([0.0] if vals[0] <= 0 else []) + [10.0**k for k in range(math.ceil(math.log10(lo)),
                                                                         math.floor(math.log10(vals[-1])) + 1)]
    axis.set_major_locator(FixedLocator(vals))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos=None: "0" if v == 0 else _count(v)))
    axis.set_minor_locator(NullLocator())


def _step_plot(data, steps, metric, scale, color, path: Path, notes: list[str]) -> bool:
    """`metric` against the training step, one line per model, on a log x axis; a step 0 (Pythia's
    initialisation) sits on the linear part of a symlog axis, linear up to the first positive step."""
    import matplotlib.pyplot as plt

    groups = epoch_lines(data, steps, metric)
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=100)
    try:
        palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        for k, (name, g) in enumerate(groups):
            c = palette(k % palette.N)
            if len(groups) > _MAX_NAMED_MODELS and color is not None and np.isfinite(g["n_params"].iloc[0]) \
                    and g["n_params"].iloc[0] > 0:
                c = color[2](color[1](g["n_params"].iloc[0]))
            ax.plot(g["epoch"], g["y"], marker="o", ms=4, lw=1.5, color=c, label=_line_label(name, g))
        x = pd.concat([g["epoch"] for _, g in groups])
        positive = x[x > 0]
        if (x <= 0).any() and len(positive):
            thresh = float(positive.min())
            ax.set_xscale("symlog", linthresh=thresh, linscale=0.5)
            note = (f"step plots: step 0 drawn on a symlog x axis (linear from 0 to step {thresh:g}, "
                    "logarithmic above)")
            if note not in notes:
                notes.append(note)
            ax.set_xlabel(f"training step (symlog: linear below {thresh:g})")
        elif len(positive):
            ax.set_xscale("log")
            ax.set_xlabel("training step (log scale)")
        else:
            ax.set_xlabel("training step")
        _step_ticks(ax.xaxis, x)
        ys = pd.concat([g["y"] for _, g in groups])
        if scale == "log" and (ys > 0).all() and ys.max() / ys.min() >= 30:
            ax.set_yscale("log")
            _readable_log_axis(ax.yaxis, float(ys.min()), float(ys.max()))
        ax.set_ylabel(metric)
        who = groups[0][0] if len(groups) == 1 else f"{len(groups)} models"
        ax.set_title(f"{metric} over the training history — {who}", fontsize=9)
        ax.grid(alpha=0.3)
        if len(groups) <= _MAX_NAMED_MODELS:
            fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False)
        _save_fig(fig, path)
    finally:
        plt.close(fig)
    return True


def epoch_lines(data: pd.DataFrame, epochs: pd.Series, metric: str,
                keep: frozenset = frozenset()) -> list[tuple[str, pd.DataFrame]]:
    """(model, its rows sorted by epoch with columns epoch, y and n_params) for every model with a
    value of `metric` at two or more epochs (or at one, for the models in `keep`): the lines of an
    over-training plot."""
    frame = pd.DataFrame({"model": data["model"].astype(str), "epoch": epochs,
                          "y": pd.to_numeric(data[metric], errors="coerce"),
                          "n_params": pd.to_numeric(data["n_params"], errors="coerce") if "n_params" in data.columns
                          else np.nan})
    frame = frame.dropna(subset=["epoch", "y"])
    return [(k, g.sort_values("epoch")) for k, g in frame.groupby("model", sort=False)
            if g["epoch"].nunique() > 1 or k in keep]


def tracked_tables(data: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{model: its run's nc_track.csv} for the rows whose collection lies in a run trained with
    `--track-nc` (`collect_dir` = RUN/collect/<checkpoint>, RUN/nc_track.csv present); {} otherwise.
    A file that cannot be read as a table with an `epoch` column is left out."""
    from lcfast.pipeline.track import TRACK_FILE

    if "collect_dir" not in data.columns or "model" not in data.columns:
        return {}
    out: dict[str, pd.DataFrame] = {}
    for model, cdir in zip(data["model"].astype(str), data["collect_dir"]):
        if model in out or not isinstance(cdir, str) or Path(cdir).parent.name != "collect":
            continue
        f = Path(cdir).parent.parent / TRACK_FILE
        if not f.is_file():
            continue
        try:
            t = pd.read_csv(f)
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if "epoch" in t.columns and len(t):
            out[model] = t.assign(epoch=pd.to_numeric(t["epoch"], errors="coerce"))
    return out


def _line_label(model: str, g: pd.DataFrame) -> str:
    n = g["n_params"].iloc[0]
    return f"{model} ({_count(n)} parameters)" if np.isfinite(n) and n > 0 else model


#: more models than this are coloured by parameter count (a colour bar) instead of one colour each
_MAX_NAMED_MODELS = 20
#: a model's exact points and its tracked curve differ by more than this factor (median over its
#: checkpoints): they get a panel each, as on one axis the gap reads as a jump of the curve
_SPLIT_RATIO = 1.5


def _scales_differ(groups, curves: dict) -> bool:
    """True when the exact values and the tracked curves (at the same epochs, over every model)
    differ by more than `_SPLIT_RATIO` in median: tracked rows see far fewer positions, and
    variability estimates shrink with fewer samples per class (README, "Tracking neural collapse
    during training")."""
    logs = []
    for name, g in groups:
        tc = curves.get(name)
        if tc is None:
            continue
        ex = g["y"].to_numpy(dtype=np.float64)
        tr = np.interp(g["epoch"].to_numpy(dtype=np.float64), tc["epoch"].to_numpy(dtype=np.float64),
                       tc["y"].to_numpy(dtype=np.float64))
        ok = (ex > 0) & (tr > 0)
        logs += list(np.log(ex[ok] / tr[ok]))
    return bool(logs) and abs(float(np.median(logs))) > math.log(_SPLIT_RATIO)


def _epoch_plot(data, epochs, metric, scale, color, path: Path, tracked: dict | None = None) -> bool:
    """`metric` against the epoch, one line per model: up to `_MAX_NAMED_MODELS` models each in its own
    colour, named in a legend under the axes; more, coloured by parameter count with a colour bar.
    Integer epoch ticks. A model trained with `--track-nc` (in `tracked`) is drawn as its tracked
    curve (a line) with the exact checkpoints as black-edged points; where the two sit at different
    scales, the exact points (joined by dashes) and the tracked curves get a panel each, with its own
    y axis, so the models stay apart and the gap does not read as a jump."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    curves, n_tracked = {}, []  # model -> its tracked curve of this metric; positions per tracked row
    for k, t in (tracked or {}).items():
        if metric in t.columns:
            tc = pd.DataFrame({"epoch": t["epoch"], "y": pd.to_numeric(t[metric], errors="coerce")}).dropna()
            if len(tc):
                curves[k] = tc.sort_values("epoch")
                if "n_samples" in t.columns:
                    n_tracked += list(pd.to_numeric(t["n_samples"], errors="coerce").dropna())
    groups = epoch_lines(data, epochs, metric, keep=frozenset(curves))
    if not groups:
        return False
    split = _scales_differ(groups, curves)
    fig, axes = plt.subplots(1, 2 if split else 1, figsize=(10.4 if split else 5.6, 4.2), dpi=100, squeeze=False)
    ax_exact, ax_track = axes[0][0], axes[0][-1]
    try:
        by_size = len(groups) > _MAX_NAMED_MODELS and color is not None
        palette = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
        handles = []
        for k, (name, g) in enumerate(groups):
            c = palette(k % palette.N)
            if by_size and np.isfinite(g["n_params"].iloc[0]) and g["n_params"].iloc[0] > 0:
                c = color[2](color[1](g["n_params"].iloc[0]))
            if name in curves:
                tc = curves[name]
                ax_track.plot(tc["epoch"], tc["y"], lw=1.5, color=c, marker="o", ms=2.5)  # (a 1-row curve shows)
                ax_exact.plot(g["epoch"], g["y"], ls="--" if split else "none", lw=0.8, color=c, marker="o", ms=6,
                              mfc=c, mec="black", mew=0.8)
            else:
                ax_exact.plot(g["epoch"], g["y"], marker="o", ms=5, lw=1.5, color=c)
            handles.append(Line2D([], [], color=c, lw=2, label=_line_label(name, g)))
        if curves:
            handles += [Line2D([], [], color="gray", lw=1.5, label="line: tracked during training (--track-nc)"),
                        Line2D([], [], color="gray", ls="--" if split else "none", lw=0.8, marker="o", ms=6,
                               mec="black", mew=0.8, label="black-edged point: exact (collect of the checkpoint)")]
        exact_groups = groups if split else groups + [("", tc) for tc in curves.values()]
        _finish_epoch_axes(fig, ax_exact, exact_groups, metric, scale, color if by_size else None,
                           n_models=len(groups), colorbar=not split)
        if split:
            _finish_epoch_axes(fig, ax_track, [("", tc) for tc in curves.values()], metric, scale,
                               color if by_size else None, n_models=len(groups))
            who = groups[0][0] if len(groups) == 1 else f"{len(groups)} models"
            per_row = f"{_count(float(np.median(n_tracked)))} positions per row" if n_tracked else "a few steps per row"
            fig.suptitle(f"{metric} over training — {who}: exact and tracked differ in scale (fewer positions, "
                         "lower variability estimates)", fontsize=10, y=1.02)
            ax_exact.set_title("exact: collect of each checkpoint (every train position)", fontsize=9)
            ax_track.set_title(f"tracked during training: {per_row} (own axis)", fontsize=9)
            lo = min(ax_exact.get_xlim()[0], ax_track.get_xlim()[0])
            hi = max(ax_exact.get_xlim()[1], ax_track.get_xlim()[1])
            for ax in (ax_exact, ax_track):  # one epoch axis for both panels
                ax.set_xlim(lo, hi)
        if not by_size:
            fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                       ncol=2 if split or len(handles) > 6 else 1, fontsize=8, frameon=False)
        _save_fig(fig, path)
    finally:
        plt.close(fig)
    return True


def _finish_epoch_axes(fig, ax, groups, metric: str, scale: str, color, n_models: int | None = None,
                       colorbar: bool = True) -> None:
    """Axes of an over-training plot: integer epochs, a log y axis only over a wide range, a colour
    bar when many models are coloured by size, and a title naming the model."""
    from matplotlib.ticker import MaxNLocator

    ys = pd.concat([g["y"] for _, g in groups])
    if scale == "log" and (ys > 0).all() and ys.max() / ys.min() >= 30:
        ax.set_yscale("log")
        _readable_log_axis(ax.yaxis, float(ys.min()), float(ys.max()))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ep = pd.concat([g["epoch"] for _, g in groups])
    ax.set_xlim(float(ep.min()) - 0.25, float(ep.max()) + 0.25)
    if color is not None and colorbar:
        from matplotlib.cm import ScalarMappable

        sm = ScalarMappable(norm=color[1], cmap=color[2])
        sm.set_array([])
        cb = fig.colorbar(sm, ax=ax, label="parameters")
        _readable_log_axis(cb.ax.yaxis, color[1].vmin, color[1].vmax, _count)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    n = len(groups) if n_models is None else n_models
    who = groups[0][0] if n == 1 else f"{n} models"
    ax.set_title(f"{metric} over training — {who}", fontsize=9)
    ax.grid(alpha=0.3)


def _depth_plot(depth: pd.DataFrame, metric: str, path: Path) -> bool:
    import matplotlib.pyplot as plt

    frame = depth.assign(y=pd.to_numeric(depth[metric], errors="coerce")).dropna(subset=["y"])
    groups = [(k, g.sort_values("layer")) for k, g in frame.groupby("_line", sort=False) if g["layer"].nunique() > 1]
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=100)
    try:
        by_step = _step_colors(groups)
        for name, g in groups:
            c = by_step[0](by_step[1](float(g["step"].iloc[0]))) if by_step else None
            ax.plot(g["layer"], g["y"], marker="o", ms=5, lw=1.5, alpha=0.9, label=name, color=c)
        if by_step:  # a training history through depth: one line per step, coloured by the step
            from matplotlib.cm import ScalarMappable

            sm = ScalarMappable(norm=by_step[1], cmap=by_step[0])
            sm.set_array([])
            cb = fig.colorbar(sm, ax=ax, label="training step" + (" (symlog)" if by_step[2] else " (log)"))
            _step_ticks(cb.ax.yaxis, pd.Series([float(g["step"].iloc[0]) for _, g in groups]))
        if len(groups) <= 12:
            ax.legend(fontsize=7, loc="best")
        if (frame["y"] > 0).all() and frame["y"].max() / max(frame["y"].min(), 1e-300) > 20:
            ax.set_yscale("log")
            _readable_log_axis(ax.yaxis, float(frame["y"].min()), float(frame["y"].max()))
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (hidden state; 0 = embeddings)")
        ax.set_ylabel(metric)
        if by_step and len({n.rsplit("/", 1)[0] for n, _ in groups}) == 1:
            who = f"{groups[0][0].rsplit('/', 1)[0]}, {len(groups)} steps"
        else:
            who = groups[0][0] if len(groups) == 1 else f"{len(groups)} models"
        ax.set_title(f"{metric} through depth — {who}", fontsize=9)
        ax.grid(alpha=0.3)
        _save_fig(fig, path)
    finally:
        plt.close(fig)
    return True


def _step_colors(groups):
    """(colormap, norm, symlog) colouring depth lines by their training step when every line is one
    step of a training history (`collect --revisions`, several steps); None otherwise."""
    import matplotlib as mpl
    from matplotlib.colors import LogNorm, SymLogNorm

    if len(groups) < 2 or any("step" not in g.columns for _, g in groups):
        return None
    steps = [pd.to_numeric(g["step"], errors="coerce").iloc[0] for _, g in groups]
    if any(not np.isfinite(v) for v in steps) or len(set(steps)) < 2:
        return None
    lo, hi = min(steps), max(steps)
    positive = [v for v in steps if v > 0]
    if lo <= 0:
        return mpl.colormaps["viridis"], SymLogNorm(linthresh=min(positive), vmin=lo, vmax=hi), True
    return mpl.colormaps["viridis"], LogNorm(vmin=lo, vmax=hi), False


def make_depth_plots(depth: pd.DataFrame, metrics: list[str], out_dir: Path, stage) -> list[Path]:
    """`depth_<metric>.png` for every metric: the metric against the layer, one line per model, drawn
    into `stage` (a `lcfast.io.Staging`: the caller publishes them with its other outputs)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    plots = []
    for m in metrics:
        p = Path(out_dir) / f"depth_{_safe(m)}.png"
        if m in depth.columns and _depth_plot(depth, m, stage.path(p)):
            plots.append(p)
        else:
            stage.forget(p)
    return plots


def make_plots(result: AnalysisResult, out_dir: Path, stage=None, kinds=("scatter", "epochs", "steps")) -> list[Path]:
    """Scatter of each metric vs the target; metric-vs-epoch plots when models have several checkpoints;
    metric-vs-step plots (`steps_<metric>.png`) when models have several stepN revisions (a training
    history, `collect --revisions`); `kinds`: which of them to draw.

    The plots are published together once all are drawn (into `stage`, a `lcfast.io.Staging`, when
    given: the caller publishes them with its other outputs and then calls `remove_stale_plots`)."""
    import matplotlib

    from lcfast.io import staged

    if stage is None:
        ours = (Path(out_dir) / SUMMARY_FILE).is_file()
        with staged() as st:
            plots = make_plots(result, out_dir, st, kinds)
        if ours:
            remove_stale_plots(out_dir, plots)
        return plots
    matplotlib.use("Agg", force=True)
    data, target = result.data, result.target
    pdir = Path(out_dir)
    color = _color_setup(data)
    if color is None and "scatter" in kinds:
        result.notes.append("no positive n_params column: scatter plots are not coloured by parameter count")
    plots: list[Path] = []
    for _, row in result.correlations.iterrows():
        if "scatter" not in kinds or row["n"] < 1 or row["metric"] not in data.columns:
            continue
        p = pdir / f"scatter_{_safe(row['metric'])}_vs_{_safe(target)}.png"
        _scatter(data, row["metric"], target, row, color, stage.path(p))
        plots.append(p)
    epochs = epoch_axis(data) if "epochs" in kinds else None
    if epochs is not None:
        tracked = tracked_tables(data)
        if tracked:
            result.notes.append(f"epoch plots: tracked curves from the nc_track.csv of {len(tracked)} run(s) "
                                "(lcfast train --track-nc), exact points from the collected checkpoints")
        scales = dict(zip(result.correlations["metric"], result.correlations["scale"]))
        for m in [target] + list(result.correlations["metric"]):
            p = pdir / f"epochs_{_safe(m)}.png"
            if _epoch_plot(data, epochs, m, scales.get(m, "log"), color, stage.path(p), tracked):
                plots.append(p)
            else:
                stage.forget(p)
    steps = step_axis(data) if "steps" in kinds else None
    if steps is not None:
        scales = dict(zip(result.correlations["metric"], result.correlations["scale"]))
        for m in [target] + list(result.correlations["metric"]):
            p = pdir / f"steps_{_safe(m)}.png"
            if _step_plot(data, steps, m, scales.get(m, "log"), color, stage.path(p), result.notes):
                plots.append(p)
            else:
                stage.forget(p)
    return plots


def remove_stale_plots(out_dir: Path, keep: list[Path]) -> None:
    """Delete the plots of an earlier analysis in `out_dir` (a folder an analysis wrote: it has
    analysis.json) that this one did not redraw (they would be stale); called only after the new
    plots are published."""
    keep_names = {Path(p).name for p in keep}
    pats = ("scatter_*.png", "epochs_*.png", "steps_*.png", "depth_*.png", "per_class_*.png")
    for old in [p for pat in pats for p in Path(out_dir).glob(pat)]:
        if old.name not in keep_names:
            old.unlink(missing_ok=True)
