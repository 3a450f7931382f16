"""`run_demo`: the demo's seven steps in order — corpus, tokenize, train, collect, measure, analyze,
report — each reused when its output is there, then demo.json."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lcfast.data.datadir import DataDir
from lcfast.errors import UsageError
from lcfast.pipeline.collect.summary import CollectSummary
from lcfast.pipeline.demo.notes import (
    OVER_TRAINING,
    findings,
    plots_note,
    plotted_metrics,
    speed_notes,
    speed_summary,
    tracking_notes,
)
from lcfast.pipeline.demo.profiles import FULL, QUICK, DemoProfile
from lcfast.pipeline.demo.reuse import (
    collected,
    epochs_of,
    file_sha,
    finished_run,
    read_json,
    stamp_ok,
    write_stamp,
)
from lcfast.pipeline.demo.workers import (
    collect_job,
    make_pool,
    run_jobs,
    train_job,
    worker_count,
)


@dataclass
class StageLog:
    timings: dict = field(default_factory=dict)
    reused: dict = field(default_factory=dict)


@dataclass
class _Demo:
    """What every step of one demo run shares."""

    prof: DemoProfile
    root: Path  # DIR: the results of the last demo
    work: Path  # DIR/work/<profile>: corpus/, data/, runs/
    device: str
    progress: bool
    console: object  # rich Console the demo talks to
    quiet: object  # a rich Console that prints nothing
    stack: contextlib.ExitStack  # undone when the demo ends (worker pool, torch threads)
    log: StageLog = field(default_factory=StageLog)

    @property
    def say(self):
        """The console the steps print to: `console`, or a silent one without progress."""
        return self.console if self.progress else self.quiet

    @contextlib.contextmanager
    def step(self, title: str, key: str):
        """A step: its rule on the console, its wall time in `log.timings[key]` when it finishes."""
        if self.progress:
            self.console.rule(f"[bold]{title}")
        t = time.perf_counter()
        yield
        self.log.timings[key] = time.perf_counter() - t


@dataclass
class _Sweep:
    """The models of the sweep and the worker processes that train and collect them."""

    grid: list[tuple[int, int, int]]  # (layers, width, epochs), longest first
    names: list[str]  # run names, as grid
    runs_dir: Path
    n_workers: int
    stack: contextlib.ExitStack
    _pool: object = None

    @property
    def in_proc(self) -> bool:
        return self.n_workers <= 1

    def pool_for(self, n_jobs: int):
        """The worker pool (started on first use: a rerun with nothing left to do needs none)."""
        if self.in_proc or n_jobs == 0:
            return None
        if self._pool is None:
            self._pool = make_pool(self.n_workers)
            self.stack.callback(self._pool.shutdown)
        return self._pool


@dataclass
class _Measured:
    """The measure step's tables: every row, the final checkpoints' CSV, the over-training CSV."""

    df_all: object  # pandas DataFrame of every measured checkpoint, with `is_final`
    final: object  # pandas DataFrame of the final checkpoints
    meas_csv: Path
    dev_csv: Path | None
    final_epochs: dict[str, int]  # run name -> its last epoch


def run_demo(
    out: str | Path = "lcfast-demo",
    *,
    quick: bool = False,
    device: str = "auto",
    console=None,
    progress: bool = True,
    profile: DemoProfile | None = None,
    workers: int | None = None,
) -> dict:
    """Run (or resume) the demo into `out`; returns the demo.json summary (also written there).

    `workers`: processes for training and collection (default: one per core on CPU, each with one
    intra-op thread; 1 = in this process, as on a GPU)."""
    from lcfast.errors import interrupt_note

    work = Path(out) / "work" / (profile or (QUICK if quick else FULL)).name
    note = f"finished steps under {work} are intact; rerun the same command to continue"
    with interrupt_note(lambda: note), contextlib.ExitStack() as stack:
        return _run_demo(out, quick, device, console, progress, profile, workers, stack)


def _run_demo(out, quick, device, console, progress, profile, workers, stack) -> dict:
    from lcfast.io import atomic_write_json

    d = _start(out, quick, device, console, progress, profile, stack)
    t_all = time.perf_counter()
    with d.step("1/7 corpus", "corpus"):
        stories, d.log.reused["corpus"] = _stage_corpus(d.work, d.prof, d.say)
    with d.step("2/7 tokenizer + shards", "tokenize"):
        data_dir, d.log.reused["tokenize"] = _stage_tokenize(d.work, stories, d.prof, d.say)
    with d.step("3/7 train", "train"):
        sweep = _plan_sweep(d, workers)
        trained = _train(d, sweep, data_dir)
    with d.step("4/7 collect", "collect"):
        summaries, tracked = _collect(d, sweep, data_dir)
    with d.step("5/7 measure", "measure"):
        m = _measure(d, sweep)
    with d.step("6/7 analyze", "analyze"):
        corr, plots, stamp, per_class = _analyze_step(d, sweep, m)
    with d.step("7/7 report", "report"):
        report, notes, facts, speed = _report_step(d, sweep, m, corr, plots, trained, summaries, tracked,
                                                   per_class)
        write_stamp(_analysis_stamp(d.root), stamp)
    d.log.timings["total"] = time.perf_counter() - t_all

    summary = {
        "profile": asdict(d.prof),
        "out": str(d.root),
        "report": str(report),
        "measurements": str(m.meas_csv),
        "measurements_over_training": str(m.dev_csv) if m.dev_csv else None,
        "workers": sweep.n_workers,
        "plots": [str(p) for p in plots],
        "timings_s": d.log.timings,
        "reused": d.log.reused,
        "findings": facts,
        "per_class": per_class,
        "notes": notes,
        "speed": speed,
        "models": json.loads(m.final[["model", "n_params", "layers", "width", "epochs", "val_loss", "nc1_cdnv",
                                      "nc4_agreement"]].to_json(orient="records")),
    }
    atomic_write_json(d.root / "demo.json", summary)
    if progress:
        _print_end(d, m, report, notes)
    return summary


def _start(out, quick, device, console, progress, profile, stack) -> _Demo:
    """Check `out` and `device` before any work (a bad one fails now, not after the corpus and
    tokenizer), make the work folder."""
    from rich.console import Console

    console = console or Console(stderr=True)
    prof = profile or (QUICK if quick else FULL)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not ((root / "work").is_dir() or (root / "demo.json").is_file()):
        # the demo replaces report.md, measurements.csv, … in OUT: only in a folder that is its own
        raise UsageError(f"--out {root}: folder exists, is not empty and holds no lcfast demo; use another --out")
    from lcfast.dist import resolve_device

    resolve_device(device)
    work = root / "work" / prof.name
    work.mkdir(parents=True, exist_ok=True)
    return _Demo(prof=prof, root=root, work=work, device=device, progress=progress, console=console,
                 quiet=Console(quiet=True), stack=stack)


def _stage_corpus(work: Path, prof: DemoProfile, console) -> tuple[Path, bool]:
    from lcfast.data import synth

    cdir = work / "corpus"
    want = {"n_stories": prof.n_stories, "seed": prof.seed, "generator_version": synth.GENERATOR_VERSION}
    stamp = cdir / "demo_stamp.json"
    if (cdir / synth.STORIES_FILE).is_file() and stamp_ok(stamp, want):
        console.print(f"corpus: reused {cdir / synth.STORIES_FILE}", highlight=False)
        return cdir / synth.STORIES_FILE, True
    from lcfast.progress import status

    with status(console, f"writing {prof.n_stories:,} synthetic stories…"):
        meta = synth.write_corpus(cdir, n_stories=prof.n_stories, seed=prof.seed)
    write_stamp(stamp, want)
    console.print(f"corpus: {meta['n_stories']:,} stories, {meta['n_words']:,} words, "
                  f"{meta['n_word_types']:,} word types")
    return cdir / synth.STORIES_FILE, False


def _stage_tokenize(work: Path, stories: Path, prof: DemoProfile, console) -> tuple[Path, bool]:
    from lcfast.data.tokenize import tokenize_files

    ddir = work / "data"
    want = {"corpus_sha256": file_sha(stories), "tokenizer": f"train:{prof.vocab}", "val_fraction": prof.val_fraction,
            "seed": prof.seed}
    stamp = ddir / "demo_stamp.json"
    files = DataDir(ddir)
    if all(f.is_file() for f in (files.train, files.val, files.tokenizer)) and stamp_ok(stamp, want):
        console.print(f"tokenize: reused {ddir}", highlight=False)
        return ddir, True
    from lcfast.progress import status

    with status(console, f"training a {prof.vocab:,}-token BPE tokenizer, then writing the shards…"):
        meta = tokenize_files([str(stories)], f"train:{prof.vocab}", str(ddir), val_fraction=prof.val_fraction,
                              seed=prof.seed)
    write_stamp(stamp, want)
    console.print(f"tokenize: vocab {meta['vocab_size']}, train tokens {meta['tokens']['train']:,}, "
                  f"val tokens {meta['tokens']['val']:,}")
    return ddir, False


def _cost(prof: DemoProfile, g: tuple[int, int, int]) -> float:
    """Relative CPU time per token of a (layers, width, epochs) model: its parameters plus a fixed
    100k for the per-token work that does not grow with them (fits the demo's measured tok/s within
    ~30%); for the bars' time estimates only."""
    from lcfast.model.gptneo import count_params

    return 1e5 + count_params(prof.vocab, g[0], g[1], prof.context)


def _plan_sweep(d: _Demo, workers: int | None) -> _Sweep:
    """The grid of models, longest first (better packing on the workers), and how many processes run
    them; on CPU with workers this process too works with one thread (tiny models; the same numbers
    on every rerun)."""
    import torch

    from lcfast.pipeline.sweep import run_name

    prof = d.prof
    grid = [(l, w, e) for l in prof.layers for w in prof.widths for e in prof.epochs]
    grid.sort(key=lambda g: -(g[0] * g[1] * g[1] * g[2]))
    names = [run_name(l, w, e, prof.seed) for l, w, e in grid]
    n_workers = workers if workers is not None else worker_count(d.device, len(grid))
    sweep = _Sweep(grid=grid, names=names, runs_dir=d.work / "runs", n_workers=n_workers, stack=d.stack)
    if not sweep.in_proc:
        d.stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)
    return sweep


def _train(d: _Demo, sweep: _Sweep, data_dir: Path) -> dict[str, dict]:
    """Train every model of the sweep (a finished run with the same settings is reused); {run name:
    its last epoch's metrics}."""
    prof, console, progress = d.prof, d.console, d.progress
    names = sweep.names
    track_every = None if prof.track_every is None else min(prof.track_every, prof.steps_per_epoch)
    run_kw = dict(device=d.device, progress=progress and sweep.in_proc, track_nc=prof.track_every is not None,
                  track_every=track_every)
    jobs = [(str(data_dir), str(sweep.runs_dir / n), prof.train_config(l, w, e), run_kw)
            for (l, w, e), n in zip(sweep.grid, names)]
    trained: dict[str, dict] = {}

    def train_done(i, m):
        trained[names[i]] = m
        if progress:
            how = ("reused" if m.get("already_complete")
                   else f"{m.get('n_params', 0):,} params, {m.get('tokens_per_s', 0):,.0f} tok/s")
            console.print(f"  {names[i]}: val_loss {m.get('val_loss', float('nan')):.4f} ({how})", highlight=False)

    todo = []
    for i, job in enumerate(jobs):
        done = finished_run(Path(job[1]), job[2])
        if done is None:
            todo.append(i)
        else:
            train_done(i, done)
    if progress and todo:
        console.print(f"training {len(todo)} models" + (f", {sweep.n_workers} at a time" if not sweep.in_proc else "")
                      + f" ({prof.steps_per_epoch} steps of {prof.batch_size}×{prof.context} tokens per epoch)")
    run_jobs(train_job, [jobs[i] for i in todo], [names[i] for i in todo], sweep.pool_for(len(todo)),
             d.say, "train", lambda k, m: train_done(todo[k], m), progress=progress,
             weights=[_cost(prof, sweep.grid[i]) * sweep.grid[i][2] for i in todo])
    d.log.reused["train"] = all(m.get("already_complete") for m in trained.values())
    return trained


def _tracked_models(prof: DemoProfile, grid: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The models whose every epoch is collected (`prof.track_training`)."""
    multi = [g for g in grid if g[2] > 1]
    tracked = {"none": [], "all": multi, "largest": sorted(multi, key=lambda g: (g[0] * g[1] * g[1], g[2]))[-1:]}.get(
        prof.track_training)
    if tracked is None:
        raise UsageError(f"demo profile: track_training must be none, largest or all, got {prof.track_training!r}")
    return tracked


def _collect(d: _Demo, sweep: _Sweep, data_dir: Path) -> tuple[list[dict], list[tuple[int, int, int]]]:
    """Collect the last checkpoint of every model and every checkpoint of the tracked ones; (one
    summary per checkpoint, the tracked models)."""
    prof, console, progress = d.prof, d.console, d.progress
    copts = {"batch_size": prof.collect_batch, "device": d.device}
    tracked = _tracked_models(prof, sweep.grid)
    cjobs = [(str(sweep.runs_dir / n), "all" if g in tracked else "last", copts, progress and sweep.in_proc)
             for g, n in zip(sweep.grid, sweep.names)]
    summaries: list[CollectSummary] = []

    def collect_done(i, res):
        res = [CollectSummary.from_json(s) for s in res]
        summaries.extend(res)
        if progress:  # one short line per checkpoint (fits 80 columns)
            for s in res:
                tr = s.passes["train"]
                how = "reused" if tr.reused else (
                    f"{tr.tokens_per_s or 0:,.0f} tok/s, class statistics {tr.stats_share_of_forward:.1%} "
                    "of the forward")
                console.print(f"  {s.model} {s.checkpoint}: {how}", highlight=False)

    # jobs whose collect.json is there are reruns: done in this process (they only check and reuse)
    todo = [i for i, (run, ck, _, _) in enumerate(cjobs) if not collected(Path(run), ck)]
    if progress:
        from lcfast.data.shards import TokenShard

        n_train = TokenShard(str(DataDir(data_dir).train)).n_tokens - 1
        n_ck = sum(len(epochs_of(Path(run))) if ck == "all" else 1 for run, ck, _, _ in cjobs)
        console.print(f"{n_ck} checkpoints: class statistics over {n_train:,} train positions, NC4 over val")
    for i in range(len(cjobs)):
        if i not in todo:
            collect_done(i, collect_job(*cjobs[i][:3], False))
    run_jobs(collect_job, [cjobs[i] for i in todo], [sweep.names[i] for i in todo], sweep.pool_for(len(todo)),
             d.say, "collect", collect_done, progress=progress,
             weights=[_cost(prof, sweep.grid[i]) * (sweep.grid[i][2] if cjobs[i][1] == "all" else 1) for i in todo])
    d.log.reused["collect"] = all(all(p.reused for p in s.passes.values()) for s in summaries)
    return summaries, tracked


def _measure(d: _Demo, sweep: _Sweep) -> _Measured:
    """Measure every collected checkpoint (DIR/measure/); measurements.csv (the final checkpoints)
    and, when some model has earlier ones, measurements_over_training.csv."""
    from lcfast.io import atomic_write_text
    from lcfast.pipeline.measure import measure
    from lcfast.pipeline.sweep import run_name

    root = d.root
    df_all = measure([sweep.runs_dir / n for n in sweep.names], root / "measure", console=d.say,
                     progress=d.progress, device=d.device)
    final_epochs = {run_name(l, w, e, d.prof.seed): e for l, w, e in sweep.grid}
    df_all["is_final"] = [final_epochs.get(m) == e for m, e in zip(df_all["model"], df_all["epochs"])]
    final = df_all[df_all["is_final"]].drop(columns=["is_final"]).sort_values(["n_params", "epochs"], kind="stable")
    meas_csv = root / "measurements.csv"
    atomic_write_text(meas_csv, final.to_csv(index=False))  # atomic: a kill never leaves half a CSV
    dev_csv = None
    if (~df_all["is_final"]).any():
        dev_csv = root / "measurements_over_training.csv"
        atomic_write_text(dev_csv, df_all.drop(columns=["is_final"])
                          .sort_values(["n_params", "model", "epochs"], kind="stable").to_csv(index=False))
    return _Measured(df_all=df_all, final=final, meas_csv=meas_csv, dev_csv=dev_csv, final_epochs=final_epochs)


def _analysis_stamp(root: Path) -> Path:
    """The stamp of the analysis and report: written once the report is."""
    return root / "analysis" / "demo_stamp.json"


def _analyze_step(d: _Demo, sweep: _Sweep, m: _Measured):
    """(correlations, plots, the stamp to write once the report is, the per-class view's summary or
    None): reused when the measurements, per-class table and tracked curves are those of the last
    report (their hashes), else `_analyze`."""
    root, runs_dir = d.root, sweep.runs_dir
    stamp = {"measurements": file_sha(m.meas_csv), "over_training": file_sha(m.dev_csv) if m.dev_csv else None,
             "tracked": {n: file_sha(runs_dir / n / "nc_track.csv") for n in sweep.names
                         if (runs_dir / n / "nc_track.csv").is_file()},
             "per_class": file_sha(root / "measure" / "per_class.parquet")
             if (root / "measure" / "per_class.parquet").is_file() else None,
             "version": 3}
    prev = read_json(root / "demo.json")
    if stamp_ok(_analysis_stamp(root), stamp) and (root / "report.md").is_file() and prev.get("plots") is not None:
        import pandas as pd

        corr = pd.read_csv(root / "analysis" / "correlations.csv")
        corr.attrs["target"] = "val_loss"
        plots = prev["plots"]
        per_class = read_json(root / "analysis" / "analysis.json").get("per_class")
        d.log.reused["analyze"] = True
    else:
        from lcfast.progress import status

        with status(d.console if d.progress else None, "fitting val_loss against every metric, drawing the plots…"):
            corr, plots, per_class = _analyze(root, m.meas_csv, m.dev_csv)
        d.log.reused["analyze"] = False
    return corr, plots, stamp, per_class


def _analyze(root: Path, meas_csv: Path, dev_csv: Path | None):
    """Correlations of every metric (analysis/correlations.csv) and the plots of the headline ones
    (see `plotted_metrics`); with several checkpoints per model, metric-vs-epoch plots
    (analysis_over_training/), and the per-class view (analysis/per_class_*; its summary is returned).
    Every PNG written is returned (the report links them all)."""
    from dataclasses import replace

    from lcfast.pipeline.analyze import make_plots, run_analysis

    res = run_analysis([str(meas_csv)], target="val_loss", out_dir=str(root / "analysis"), plots=False)
    chosen, _ = plotted_metrics(res.correlations)
    key = res.correlations.set_index("metric").loc[chosen].reset_index()
    plots = [str(p) for p in make_plots(replace(res, correlations=key), root / "analysis", kinds=("scatter",))]
    if res.per_class_view is not None:
        from lcfast.io import staged
        from lcfast.pipeline.analyze.per_class import PLOT_FILE, plot_view

        with staged() as st:
            if plot_view(res.per_class_view, st.path(root / "analysis" / PLOT_FILE)):
                plots.append(str(root / "analysis" / PLOT_FILE))
            else:
                st.forget(root / "analysis" / PLOT_FILE)
    over_csv = dev_csv or meas_csv
    if dev_csv is not None or _has_tracking(over_csv):  # curves tracked during training + exact checkpoints
        over = run_analysis([str(over_csv)], target="val_loss", out_dir=str(root / "analysis_over_training"),
                            metrics=OVER_TRAINING, plots=False)
        plots += [str(p) for p in make_plots(over, root / "analysis_over_training", kinds=("epochs",))]
    corr = res.correlations
    corr.attrs["target"] = "val_loss"
    return corr, plots, res.per_class


def _has_tracking(csv_path: Path) -> bool:
    from lcfast.pipeline.analyze import load_tables, tracked_tables

    return bool(tracked_tables(load_tables([csv_path])[0]))


def _report_step(d: _Demo, sweep: _Sweep, m: _Measured, corr, plots, trained, summaries, tracked, per_class=None):
    """report.md with the findings and notes; (its path, the notes, the findings' numbers, the speeds)."""
    from lcfast.pipeline.report import write_report
    from lcfast.pipeline.sweep import run_name

    prof = d.prof
    notes, facts = findings(m.df_all)
    notes += tracking_notes(sweep.runs_dir, sweep.names, m.final_epochs, m.df_all)
    speed = speed_summary(trained, summaries, sweep.n_workers)
    notes += speed_notes(speed)
    notes.append(
        f"Sweep: {len(sweep.grid)} models (layers {list(prof.layers)} × widths {list(prof.widths)} × epochs "
        f"{list(prof.epochs)}), {prof.steps_per_epoch} steps of {prof.batch_size}×{prof.context} tokens per epoch, "
        f"corpus of {prof.n_stories:,} synthetic stories, BPE vocabulary {prof.vocab}. All correlations: "
        "analysis/correlations.csv; every row measured: measure/measurements.csv; per-token tables: "
        "measure/per_token/; per-class table (context entropy beside per-class NC): measure/per_class.parquet."
    )
    tracked_names = [run_name(n_layers, w, e, prof.seed) for n_layers, w, e in tracked]
    report = write_report(d.root, m.meas_csv, corr, plots, notes, title="lcfast demo: linguistic collapse in miniature",
                          plots_note=plots_note(corr, tracked_names if m.dev_csv is not None else [],
                                                tracking=prof.track_every is not None),
                          per_class=per_class)
    return report, notes, facts, speed


def _print_end(d: _Demo, m: _Measured, report: Path, notes: list[str]) -> None:
    """The final models' headline metrics, where everything is, the first findings."""
    from lcfast.pipeline.measure import print_measure_table

    console, final = d.console, m.final
    print_measure_table(final, console, columns=[c for c in ("model", "val_loss", "nc1_cdnv", "gnc2_log_var",
                                                             "nc4_agreement") if c in final.columns])
    console.print(f"every metric of every model: {m.meas_csv}", highlight=False)
    console.print(f"demo finished in {d.log.timings['total']:.1f} s → {report}")
    for n in notes[:3]:
        console.print(f"• {n}")
