"""`lcfast demo`: the whole experiment of the paper, in miniature, on the embedded synthetic corpus.

    synthetic stories → byte-level BPE tokenizer (train:VOCAB) → train/val shards
      → a sweep of GPT-Neo-style models (widths × epochs) → collect → measure → analyze → report.md

Work files live under DIR/work/<profile>/ (corpus/, data/, runs/ with each run's collect/); the
results of the last demo directly in DIR: report.md, measurements.csv (final checkpoints),
measurements_over_training.csv, measure/ (every row + per_token/*.parquet), analysis/ (correlations,
plots; analysis_over_training/: each metric against the epoch, the curves tracked during training —
every model trains with `--track-nc` — with the exact points of the collected checkpoints on them),
demo.json (timings, speeds, findings). Every stage is reused when its output is there (the
corpus and shards by their stamp, runs and collections by their own resume logic, the analysis by
the hash of the measurements), so a rerun or an interrupted run continues where it stopped.

On CPU, training and collection run in one worker process per core with one intra-op thread each:
the models are tiny, and on a busy 2-core machine two OpenMP threads per process were measured
5-20× slower than one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lcfast.errors import UsageError


@dataclass(frozen=True)
class DemoProfile:
    name: str
    n_stories: int
    seed: int
    vocab: int
    val_fraction: float
    context: int
    batch_size: int
    lr: float
    layers: tuple[int, ...]
    widths: tuple[int, ...]
    epochs: tuple[int, ...]
    steps_per_epoch: int
    collect_batch: int = 32
    track_training: str = "none"  # every epoch's checkpoint collected for: "none", "largest" (multi-epoch run), "all"
    eval_tokens: int = 1 << 20
    track_every: int | None = 20  # train --track-nc --track-every N (None: no tracking): the over-training curves


# Sizes tuned by timing on 2 CPU cores shared with other jobs (we got ~50-60% of them): --quick
# ran in 97 s, the default in 11.5 min; an idle machine should take about half.
QUICK = DemoProfile(
    name="quick", n_stories=2500, seed=0, vocab=2048, val_fraction=0.05, context=64, batch_size=32, lr=3e-3,
    layers=(1,), widths=(32, 96), epochs=(1, 3), steps_per_epoch=60,
)
FULL = DemoProfile(
    name="full", n_stories=5000, seed=0, vocab=2048, val_fraction=0.03, context=64, batch_size=32, lr=3e-3,
    layers=(1, 2), widths=(32, 64, 128), epochs=(1, 3), steps_per_epoch=100, track_training="largest",
)


@dataclass
class StageLog:
    timings: dict = field(default_factory=dict)
    reused: dict = field(default_factory=dict)


def _stamp_ok(path: Path, want: dict) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")) == want
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, obj: dict) -> None:
    from lcfast.io import atomic_write_json

    atomic_write_json(path, obj)


def _stage_corpus(work: Path, prof: DemoProfile, console) -> tuple[Path, bool]:
    from lcfast.data import synth

    cdir = work / "corpus"
    want = {"n_stories": prof.n_stories, "seed": prof.seed, "generator_version": synth.GENERATOR_VERSION}
    stamp = cdir / "demo_stamp.json"
    if (cdir / synth.STORIES_FILE).is_file() and _stamp_ok(stamp, want):
        console.print(f"corpus: reused {cdir / synth.STORIES_FILE}", highlight=False)
        return cdir / synth.STORIES_FILE, True
    from lcfast.progress import status

    with status(console, f"writing {prof.n_stories:,} synthetic stories…"):
        meta = synth.write_corpus(cdir, n_stories=prof.n_stories, seed=prof.seed)
    _write_stamp(stamp, want)
    console.print(f"corpus: {meta['n_stories']:,} stories, {meta['n_words']:,} words, {meta['n_word_types']:,} word types")
    return cdir / synth.STORIES_FILE, False


def _file_sha(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stage_tokenize(work: Path, stories: Path, prof: DemoProfile, console) -> tuple[Path, bool]:
    from lcfast.data.tokenize import tokenize_files

    ddir = work / "data"
    want = {"corpus_sha256": _file_sha(stories), "tokenizer": f"train:{prof.vocab}", "val_fraction": prof.val_fraction,
            "seed": prof.seed}
    stamp = ddir / "demo_stamp.json"
    if all((ddir / n).is_file() for n in ("train.lcshard", "val.lcshard", "tokenizer.json")) and _stamp_ok(stamp, want):
        console.print(f"tokenize: reused {ddir}", highlight=False)
        return ddir, True
    from lcfast.progress import status

    with status(console, f"training a {prof.vocab:,}-token BPE tokenizer, then writing the shards…"):
        meta = tokenize_files([str(stories)], f"train:{prof.vocab}", str(ddir), val_fraction=prof.val_fraction,
                              seed=prof.seed)
    _write_stamp(stamp, want)
    console.print(f"tokenize: vocab {meta['vocab_size']}, train tokens {meta['tokens']['train']:,}, "
                  f"val tokens {meta['tokens']['val']:,}")
    return ddir, False


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
        notes.append(f"Size: Spearman ρ(n_params, val_loss) = {rp:+.3f} " + ("(larger models reach lower loss)." if rp < 0 else "(larger models do NOT reach lower loss here)."))
    if re_ is not None:
        notes.append(f"Training: Spearman ρ(epochs, val_loss) = {re_:+.3f} " + ("(longer training lowers loss)." if re_ < 0 else "(longer training does NOT lower loss here)."))
    rc, _ = _spearman(final["n_params"], final["nc1_cdnv"])
    if rc is not None:
        notes.append(f"Spearman ρ(n_params, nc1_cdnv) = {rc:+.3f} " + ("(larger models collapse more)." if rc < 0 else "(larger models do not collapse more here)."))
    if "nc4_agreement" in final.columns:
        ra, _ = _spearman(final["val_loss"], final["nc4_agreement"])
        if ra is not None:
            notes.append(f"NC4: Spearman ρ(val_loss, nc4_agreement) = {ra:+.3f} " + ("(better models agree more with the nearest class mean, as in the paper)." if ra < 0 else "(unlike the paper, better models do not agree more with the nearest class mean)."))
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


# ---- jobs (run in worker processes on CPU) -----------------------------------------------------


_IN_JOB = False  # (worker processes) whether a job is running
_REPORTS = None  # (worker processes) the queue progress reports go to (see `_report`)
_JOB: tuple[str, int] | None = None  # (worker processes) (stage tag, job index) of the running job
_LAST_REPORT = [0.0]


def _worker_signal(signum, frame) -> None:
    """Worker processes on SIGTERM (sent by the main process when it stops): between jobs, exit at
    once; inside one, unwind it as an interrupt (atomic writers remove their temporaries) and exit
    in `_worker_call`. Ctrl-C is ignored: it reaches the main process, which stops the workers."""
    import os

    if not _IN_JOB:
        os._exit(128 + signum)
    raise KeyboardInterrupt


def _init_worker(reports=None) -> None:
    """One intra-op thread per worker: the demo's models are tiny, and on a busy 2-core machine two
    OpenMP threads per process spin against each other (measured 5-20× slower than one thread).
    `reports`: the queue the jobs' progress goes to (`_report`)."""
    import signal

    import torch

    global _REPORTS
    _REPORTS = reports
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_signal)


def _worker_call(fn, tag: str, index: int, *args):
    """Run job `index` of stage `tag` in a worker process; an interrupt ends the process once the job
    has unwound (the pool's own loop would otherwise report it and wait for the next job)."""
    import os

    global _IN_JOB, _JOB
    _IN_JOB, _JOB = True, (tag, index)
    _LAST_REPORT[0] = 0.0
    try:
        return fn(*args)
    except KeyboardInterrupt:
        os._exit(130)
    finally:
        _IN_JOB, _JOB = False, None


def _report(fraction: float) -> None:
    """(worker processes) Tell the main process how far the running job is (0..1), at most every
    half second: its bar moves while the first jobs run, with an estimate of the time left."""
    import time as _time

    if _REPORTS is None or _JOB is None:
        return
    now = _time.monotonic()
    if now - _LAST_REPORT[0] < 0.5:
        return
    _LAST_REPORT[0] = now
    try:
        _REPORTS.put_nowait((*_JOB, min(max(float(fraction), 0.0), 1.0)))
    except Exception:  # noqa: BLE001 - progress is best effort; the job's result is what matters
        pass


def _stop_pool(pool, grace_s: float = 10.0) -> None:
    """Stop a worker pool now: cancel the queued jobs, ask the workers to stop (SIGTERM: they unwind
    their job, so no temporary file is left), and kill those still running after `grace_s`."""
    import time as _time

    pool = pool.executor
    procs = list(getattr(pool, "_processes", {}).values())  # no public handle before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = _time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - _time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def _train_job(data_dir: str, run_dir: str, kw: dict) -> dict:
    from lcfast.pipeline.train import train_run

    steps = kw["epochs"] * (kw.get("steps_per_epoch") or 0)
    report = (lambda info: _report(info["step"] / steps)) if _REPORTS is not None and steps else None
    m = train_run(data_dir, run_dir, **kw, callback=report)
    return {k: v for k, v in m.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _collect_job(run_dir: str, checkpoint: str, opts: dict, progress: bool) -> list[dict]:
    from lcfast.pipeline.collect import CollectOptions, collect

    on_progress = _collect_reporter(Path(run_dir), checkpoint, opts) if _REPORTS is not None else None
    return collect(run_dir, checkpoint=checkpoint, opts=CollectOptions(**opts), progress=progress,
                   on_progress=on_progress)


def _collect_reporter(run: Path, checkpoint: str, opts: dict):
    """(worker processes) An `on_progress(kind, done, total)` for collect that reports the job's
    share done: each pass weighs what its shard holds, every checkpoint a train and a val pass."""
    from lcfast.data.shards import TokenShard
    from lcfast.model.sources import run_epochs

    cfg = _read_json(run / "config.json")
    data = Path(cfg.get("data", {}).get("dir", "")) if isinstance(cfg.get("data"), dict) else None
    try:
        weight = {k: float(TokenShard(str(data / f"{k}.lcshard")).n_tokens) for k in ("train", "val")}
    except Exception:  # noqa: BLE001 - no estimate: the job reports nothing until it ends
        return None
    weight["train_exact"] = weight["train"]
    n_ckpt = len(run_epochs(run)) if checkpoint == "all" else 1
    total = n_ckpt * (weight["train"] * (2 if opts.get("exact") else 1) + weight["val"])
    finished = [0.0]

    def on_progress(kind: str, done: int, n: int) -> None:
        part = weight.get(kind, 0.0) * done / max(n, 1)
        if done >= n:
            finished[0] += weight.get(kind, 0.0)
            part = 0.0
        _report((finished[0] + part) / max(total, 1.0))

    return on_progress


def _workers(device: str, n_jobs: int) -> int:
    import os

    import torch

    if n_jobs <= 1 or device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_jobs))


def _finished_run(run: Path, kw: dict) -> dict | None:
    """The last epoch's metrics of a finished run trained with these settings, else None (then
    train_run trains, resumes, or explains what differs)."""
    from lcfast.pipeline.train import is_complete

    if not is_complete(run):
        return None
    cfg = _read_json(run / "config.json")
    model, train = cfg.get("model", {}), cfg.get("train", {})
    same = (model.get("layers"), model.get("width"), train.get("epochs"), train.get("batch_size"), train.get("context"),
            train.get("lr"), train.get("seed"), train.get("steps_per_epoch")) == (
        kw["layers"], kw["width"], kw["epochs"], kw["batch_size"], kw["context"], kw["lr"], kw["seed"], kw["steps_per_epoch"])
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if (run / "metrics.jsonl").is_file() else []
    if not same or not lines:
        return None
    return {**json.loads(lines[-1]), "already_complete": True}


def _collected(run: Path, checkpoint: str) -> bool:
    """Whether every checkpoint that `collect RUN --checkpoint checkpoint` covers has its collect.json."""
    from lcfast.model.checkpoint import list_checkpoints

    epochs = sorted(list_checkpoints(run))
    want = epochs if checkpoint == "all" else epochs[-1:]
    return bool(want) and all((run / "collect" / f"epoch_{e}" / "collect.json").is_file() for e in want)


@dataclass
class _Pool:
    """Worker processes and the queue their jobs report progress on."""

    executor: object  # concurrent.futures.ProcessPoolExecutor
    reports: object  # multiprocessing Queue of (stage tag, job index, fraction done)

    def shutdown(self) -> None:
        self.executor.shutdown()


def _cost(prof: DemoProfile, g: tuple[int, int, int]) -> float:
    """Relative CPU time per token of a (layers, width, epochs) model: its parameters plus a fixed
    100k for the per-token work that does not grow with them (fits the demo's measured tok/s within
    ~30%); for the bars' time estimates only."""
    from lcfast.model.gptneo import count_params

    return 1e5 + count_params(prof.vocab, g[0], g[1], prof.context)


def _epochs_of(run: Path) -> list[int]:
    from lcfast.model.checkpoint import list_checkpoints

    return sorted(list_checkpoints(run))


def _make_pool(workers: int) -> _Pool | None:
    """`workers` spawned processes of one thread each (None for in-process work)."""
    if workers <= 1:
        return None
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    return _Pool(ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(reports,)), reports)


def _run_jobs(fn, jobs: list[tuple], labels: list[str], pool, console, title: str, on_done,
              progress: bool = True, weights: list[float] | None = None) -> list:
    """Run fn(*job) for every job — on `pool` when given, with one progress bar over the jobs that
    also counts the finished share of the running ones (their reports), else in this process, where
    each job shows its own bars (rich allows one live display at a time). `weights`: each job's
    expected cost (the bar and its time estimate move by them; default equal). `on_done(i, result)`
    after each job; results in job order."""
    results: list = [None] * len(jobs)
    if pool is None:
        for i, job in enumerate(jobs):
            if progress:
                console.print(f"[bold]{title}[/] {i + 1}/{len(jobs)}: {labels[i]}")
            results[i] = fn(*job)
            on_done(i, results[i])
        return results
    import queue as _queue
    from concurrent.futures import FIRST_COMPLETED, wait

    from lcfast.progress import progress_bar

    tag = f"{title}-{time.monotonic_ns()}"  # reports of an earlier stage's jobs are ignored
    share = [0.0] * len(jobs)
    weights = [float(w) for w in weights] if weights is not None else [1.0] * len(jobs)
    try:
        with progress_bar(unit=None, fields=("done",), console=console, enabled=progress) as bar:
            task = bar.add_task(title, total=sum(weights), done=f"0/{len(jobs)} models")
            futs = {pool.executor.submit(_worker_call, fn, tag, i, *job): i for i, job in enumerate(jobs)}
            pending, n_done = set(futs), 0
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while True:
                    try:
                        t, i, frac = pool.reports.get_nowait()
                    except _queue.Empty:
                        break
                    if t == tag and results[i] is None:
                        share[i] = max(share[i], min(frac, 0.99))
                for f in finished:
                    i = futs[f]
                    results[i] = f.result()
                    share[i] = 1.0
                    n_done += 1
                    on_done(i, results[i])
                bar.update(task, completed=sum(s * w for s, w in zip(share, weights)),
                           done=f"{n_done}/{len(jobs)} models")
    except BaseException:  # an interrupt or a failed job: the workers must not outlive this process
        _stop_pool(pool)
        raise
    return results


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
    import contextlib

    from lcfast.errors import interrupt_note

    work = Path(out) / "work" / (profile or (QUICK if quick else FULL)).name
    note = f"finished steps under {work} are intact; rerun the same command to continue"
    with interrupt_note(lambda: note), contextlib.ExitStack() as stack:
        return _run_demo(out, quick, device, console, progress, profile, workers, stack)


def _run_demo(out, quick, device, console, progress, profile, workers, stack) -> dict:
    import torch
    from rich.console import Console

    from lcfast.io import atomic_write_json
    from lcfast.pipeline.measure import measure, print_measure_table
    from lcfast.pipeline.sweep import run_name

    console = console or Console(stderr=True)
    prof = profile or (QUICK if quick else FULL)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out {root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not ((root / "work").is_dir() or (root / "demo.json").is_file()):
        # the demo replaces report.md, measurements.csv, … in OUT: only in a folder that is its own
        raise UsageError(f"--out {root}: folder exists, is not empty and holds no lcfast demo; use another --out")
    from lcfast.dist import resolve_device

    resolve_device(device)  # a bad --device fails now, not after the corpus and tokenizer
    work = root / "work" / prof.name
    work.mkdir(parents=True, exist_ok=True)
    log = StageLog()
    t_all = time.perf_counter()
    quiet = Console(quiet=True)

    def stage(name: str):
        if progress:
            console.rule(f"[bold]{name}")
        return time.perf_counter()

    t = stage("1/7 corpus")
    stories, log.reused["corpus"] = _stage_corpus(work, prof, console if progress else quiet)
    log.timings["corpus"] = time.perf_counter() - t

    t = stage("2/7 tokenizer + shards")
    data_dir, log.reused["tokenize"] = _stage_tokenize(work, stories, prof, console if progress else quiet)
    log.timings["tokenize"] = time.perf_counter() - t

    t = stage("3/7 train")
    runs_dir = work / "runs"
    grid = [(l, w, e) for l in prof.layers for w in prof.widths for e in prof.epochs]
    grid.sort(key=lambda g: -(g[0] * g[1] * g[1] * g[2]))  # longest first: better packing on the workers
    names = [run_name(l, w, e, prof.seed) for l, w, e in grid]
    n_workers = workers if workers is not None else _workers(device, len(grid))
    in_proc = n_workers <= 1
    pools: list = []

    def pool_for(n_jobs: int):
        """The worker pool (started on first use: a rerun with nothing left to do needs none)."""
        if in_proc or n_jobs == 0:
            return None
        if not pools:
            pools.append(_make_pool(n_workers))
            stack.callback(pools[0].shutdown)
        return pools[0]

    if not in_proc:  # CPU: this process too works with one thread (tiny models; same numbers on every rerun)
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)
    jobs = [
        (str(data_dir), str(runs_dir / n), dict(layers=l, width=w, epochs=e, context=prof.context, batch_size=prof.batch_size,
                                                lr=prof.lr, seed=prof.seed, device=device, steps_per_epoch=prof.steps_per_epoch,
                                                eval_tokens=prof.eval_tokens, progress=progress and in_proc,
                                                track_nc=prof.track_every is not None,
                                                track_every=None if prof.track_every is None else min(prof.track_every, prof.steps_per_epoch)))
        for (l, w, e), n in zip(grid, names)
    ]
    trained: dict[str, dict] = {}

    def train_done(i, m):
        trained[names[i]] = m
        if progress:
            how = "reused" if m.get("already_complete") else f"{m.get('n_params', 0):,} params, {m.get('tokens_per_s', 0):,.0f} tok/s"
            console.print(f"  {names[i]}: val_loss {m.get('val_loss', float('nan')):.4f} ({how})", highlight=False)

    todo = []
    for i, job in enumerate(jobs):
        done = _finished_run(Path(job[1]), job[2])
        if done is None:
            todo.append(i)
        else:
            train_done(i, done)
    if progress and todo:
        console.print(f"training {len(todo)} models" + (f", {n_workers} at a time" if not in_proc else "")
                      + f" ({prof.steps_per_epoch} steps of {prof.batch_size}×{prof.context} tokens per epoch)")
    _run_jobs(_train_job, [jobs[i] for i in todo], [names[i] for i in todo], pool_for(len(todo)),
              console if progress else quiet, "train", lambda k, m: train_done(todo[k], m), progress=progress,
              weights=[_cost(prof, grid[i]) * grid[i][2] for i in todo])
    log.timings["train"] = time.perf_counter() - t
    log.reused["train"] = all(m.get("already_complete") for m in trained.values())

    t = stage("4/7 collect")
    copts = {"batch_size": prof.collect_batch, "device": device}
    multi = [g for g in grid if g[2] > 1]
    tracked = {"none": [], "all": multi, "largest": sorted(multi, key=lambda g: (g[0] * g[1] * g[1], g[2]))[-1:]}.get(
        prof.track_training)
    if tracked is None:
        raise UsageError(f"demo profile: track_training must be none, largest or all, got {prof.track_training!r}")
    cjobs = [(str(runs_dir / n), "all" if g in tracked else "last", copts, progress and in_proc) for g, n in zip(grid, names)]
    collected: list[dict] = []

    def collect_done(i, res):
        collected.extend(res)
        if progress:  # one short line per checkpoint (fits 80 columns)
            for s in res:
                tr = s["passes"]["train"]
                how = "reused" if tr.get("reused") else (
                    f"{tr.get('tokens_per_s') or 0:,.0f} tok/s, class statistics {tr['stats_share_of_forward']:.1%} "
                    "of the forward")
                console.print(f"  {s['model']} {s['checkpoint']}: {how}", highlight=False)

    # jobs whose collect.json is there are reruns: done in this process (they only check and reuse)
    todo = [i for i, (run, ck, _, _) in enumerate(cjobs) if not _collected(Path(run), ck)]
    if progress:
        from lcfast.data.shards import TokenShard

        n_train = TokenShard(str(data_dir / "train.lcshard")).n_tokens - 1
        n_ck = sum(len(_epochs_of(Path(run))) if ck == "all" else 1 for run, ck, _, _ in cjobs)
        console.print(f"{n_ck} checkpoints: class statistics over {n_train:,} train positions, NC4 over val")
    for i in range(len(cjobs)):
        if i not in todo:
            collect_done(i, _collect_job(*cjobs[i][:3], False))
    _run_jobs(_collect_job, [cjobs[i] for i in todo], [names[i] for i in todo], pool_for(len(todo)),
              console if progress else quiet, "collect", collect_done, progress=progress,
              weights=[_cost(prof, grid[i]) * (grid[i][2] if cjobs[i][1] == "all" else 1) for i in todo])
    log.timings["collect"] = time.perf_counter() - t
    log.reused["collect"] = all(all(p.get("reused") for p in s["passes"].values()) for s in collected)

    t = stage("5/7 measure")
    df_all = measure([runs_dir / n for n in names], root / "measure", console=console if progress else quiet,
                     progress=progress, device=device)
    final_epochs = {run_name(l, w, e, prof.seed): e for l, w, e in grid}
    df_all["is_final"] = [final_epochs.get(m) == e for m, e in zip(df_all["model"], df_all["epochs"])]
    final = df_all[df_all["is_final"]].drop(columns=["is_final"]).sort_values(["n_params", "epochs"], kind="stable")
    meas_csv = root / "measurements.csv"
    from lcfast.io import atomic_write_text

    atomic_write_text(meas_csv, final.to_csv(index=False))  # atomic: a kill never leaves half a CSV
    dev_csv = None
    if (~df_all["is_final"]).any():
        dev_csv = root / "measurements_over_training.csv"
        atomic_write_text(dev_csv, df_all.drop(columns=["is_final"]).sort_values(["n_params", "model", "epochs"], kind="stable").to_csv(index=False))
    log.timings["measure"] = time.perf_counter() - t

    t = stage("6/7 analyze")
    stamp = {"measurements": _file_sha(meas_csv), "over_training": _file_sha(dev_csv) if dev_csv else None,
             "tracked": {n: _file_sha(runs_dir / n / "nc_track.csv") for n in names if (runs_dir / n / "nc_track.csv").is_file()},
             "version": 2}
    stamp_path = root / "analysis" / "demo_stamp.json"
    prev = _read_json(root / "demo.json")
    if _stamp_ok(stamp_path, stamp) and (root / "report.md").is_file() and prev.get("plots") is not None:
        import pandas as pd

        corr = pd.read_csv(root / "analysis" / "correlations.csv")
        corr.attrs["target"] = "val_loss"
        plots = prev["plots"]
        log.reused["analyze"] = True
    else:
        from lcfast.progress import status

        with status(console if progress else None, "fitting val_loss against every metric, drawing the plots…"):
            corr, plots = _analyze(root, meas_csv, dev_csv)
        log.reused["analyze"] = False
    log.timings["analyze"] = time.perf_counter() - t

    t = stage("7/7 report")
    notes, facts = findings(df_all)
    notes += _tracking_notes(runs_dir, names, final_epochs, df_all)
    speed = _speed(trained, collected, n_workers)
    notes += _speed_notes(speed)
    notes.append(
        f"Sweep: {len(grid)} models (layers {list(prof.layers)} × widths {list(prof.widths)} × epochs {list(prof.epochs)}), "
        f"{prof.steps_per_epoch} steps of {prof.batch_size}×{prof.context} tokens per epoch, corpus of {prof.n_stories:,} "
        f"synthetic stories, BPE vocabulary {prof.vocab}. All correlations: analysis/correlations.csv; every row measured: "
        "measure/measurements.csv; per-token tables: measure/per_token/."
    )
    from lcfast.pipeline.report import write_report

    tracked_names = [run_name(n_layers, w, e, prof.seed) for n_layers, w, e in tracked]
    report = write_report(root, meas_csv, corr, plots, notes, title="lcfast demo: linguistic collapse in miniature",
                          plots_note=_plots_note(corr, tracked_names if dev_csv is not None else [],
                                                     tracking=prof.track_every is not None))
    _write_stamp(stamp_path, stamp)
    log.timings["report"] = time.perf_counter() - t
    log.timings["total"] = time.perf_counter() - t_all

    summary = {
        "profile": asdict(prof),
        "out": str(root),
        "report": str(report),
        "measurements": str(meas_csv),
        "measurements_over_training": str(dev_csv) if dev_csv else None,
        "workers": n_workers,
        "plots": [str(p) for p in plots],
        "timings_s": log.timings,
        "reused": log.reused,
        "findings": facts,
        "notes": notes,
        "speed": speed,
        "models": json.loads(final[["model", "n_params", "layers", "width", "epochs", "val_loss", "nc1_cdnv", "nc4_agreement"]]
                             .to_json(orient="records")),
    }
    atomic_write_json(root / "demo.json", summary)
    if progress:
        print_measure_table(final, console, columns=[c for c in ("model", "val_loss", "nc1_cdnv", "gnc2_log_var",
                                                                 "nc4_agreement") if c in final.columns])
        console.print(f"every metric of every model: {meas_csv}", highlight=False)
        console.print(f"demo finished in {log.timings['total']:.1f} s → {report}")
        for n in notes[:3]:
            console.print(f"• {n}")
    return summary


#: one headline metric per property, as the paper plots them: NC1, NC4, GNC2, NC2 (equinorm,
#: equiangularity), NC3; the demo adds the best-fitting metric when it is not among them
_KEY_METRICS = ["nc1_cdnv", "nc4_agreement", "gnc2_log_var", "nc2_norm_cov", "nc3_dual_error", "nc2_interference_var"]
#: the metrics drawn over training (analysis_over_training/), besides val_loss
_OVER_TRAINING = ["nc1_cdnv", "nc4_agreement"]


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


def _analyze(root: Path, meas_csv: Path, dev_csv: Path | None):
    """Correlations of every metric (analysis/correlations.csv) and the plots of the headline ones
    (see `plotted_metrics`); with several checkpoints per model, metric-vs-epoch plots
    (analysis_over_training/). Every PNG written is returned (the report links them all)."""
    from dataclasses import replace

    from lcfast.pipeline.analyze import make_plots, run_analysis

    res = run_analysis([str(meas_csv)], target="val_loss", out_dir=str(root / "analysis"), plots=False)
    chosen, _ = plotted_metrics(res.correlations)
    key = res.correlations.set_index("metric").loc[chosen].reset_index()
    plots = [str(p) for p in make_plots(replace(res, correlations=key), root / "analysis", kinds=("scatter",))]
    over_csv = dev_csv or meas_csv
    if dev_csv is not None or _has_tracking(over_csv):  # curves tracked during training + exact checkpoints
        over = run_analysis([str(over_csv)], target="val_loss", out_dir=str(root / "analysis_over_training"),
                            metrics=_OVER_TRAINING, plots=False)
        plots += [str(p) for p in make_plots(over, root / "analysis_over_training", kinds=("epochs",))]
    corr = res.correlations
    corr.attrs["target"] = "val_loss"
    return corr, plots


def _plots_note(corr, tracked: list[str], tracking: bool = False) -> str:
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
    over = " and ".join(f"`{m}`" for m in _OVER_TRAINING)
    if tracking:
        text += (f" The over-training plots show {over} against the epoch: a line per model tracked during "
                 "training (`lcfast train --track-nc`), and black-edged points where a checkpoint was collected "
                 "exactly" + (f" (every epoch of {', '.join(tracked)})" if tracked else "") + ".")
    elif tracked:
        text += f" The over-training plots follow {', '.join(tracked)}, measured after every epoch: val_loss, {over}."
    return text


def _has_tracking(csv_path: Path) -> bool:
    from lcfast.pipeline.analyze import load_tables, tracked_tables

    return bool(tracked_tables(load_tables([csv_path])[0]))


def _tracking_notes(runs_dir: Path, names: list[str], final_epochs: dict, df) -> list[str]:
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


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _speed(trained: dict[str, dict], collected: list[dict], workers: int) -> dict:
    """Throughputs for the report: training tokens/s per model; collection tokens/s and the cost of
    the statistics relative to the model forward (wall and, on CPU, CPU time), per pass kind."""
    train = {k: v.get("tokens_per_s") for k, v in sorted(trained.items())}
    fresh = [s for s in collected if not s["passes"]["train"].get("reused")] or collected

    def tot(kind: str, key: str) -> float:
        return sum(float(s["passes"][kind].get(key) or 0.0) for s in fresh if kind in s["passes"])

    tok = tot("train", "tokens") + tot("val", "tokens")
    wall = tot("train", "wall_s") + tot("val", "wall_s")

    def share(kind: str, cpu: bool = False) -> float | None:
        f, st = tot(kind, "forward_cpu_s" if cpu else "forward_s"), tot(kind, "stats_cpu_s" if cpu else "stats_s")
        return st / f if f > 0 else None

    return {
        "train_tokens_per_s": train,
        "collect_tokens_per_s": tok / wall if wall > 0 else None,
        "collect_train_tokens_per_s": tot("train", "tokens") / tot("train", "wall_s") if tot("train", "wall_s") > 0 else None,
        "class_stats_share_of_forward": share("train"),
        "class_stats_share_of_forward_cpu": share("train", cpu=True),
        "ncc_share_of_val_forward": share("val"),
        "ncc_share_of_val_forward_cpu": share("val", cpu=True),
        "collect_checkpoints": len(fresh),
        "processes": workers,
    }


def _speed_notes(speed: dict) -> list[str]:
    out = []
    tr = {k: v for k, v in speed["train_tokens_per_s"].items() if isinstance(v, (int, float))}
    if tr:
        how = f", {speed['processes']} processes of one thread each" if speed["processes"] > 1 else ""
        out.append(f"Training throughput (tokens/s{how}): " + ", ".join(f"{k} {v:,.0f}" for k, v in tr.items()) + ".")
    if speed["collect_tokens_per_s"]:
        def pct(v):
            return f"{v:.1%}" if v is not None else "n/a"

        out.append(
            f"Collection: {speed['collect_tokens_per_s']:,.0f} tokens/s per process over {speed['collect_checkpoints']} "
            f"checkpoint(s) (train pass {speed['collect_train_tokens_per_s']:,.0f} tokens/s). The class-statistics "
            f"accumulation costs {pct(speed['class_stats_share_of_forward'])} of the feature forward in wall time "
            f"({pct(speed['class_stats_share_of_forward_cpu'])} in CPU time); the NC4 decisions (nearest of "
            f"all kept class means and the LM-head argmax, float64) cost {pct(speed['ncc_share_of_val_forward'])} of the val "
            "forward — with these tiny models the forward itself is very cheap, so the ratios overstate what a real model sees."
        )
    return out


__all__ = ["run_demo", "findings", "QUICK", "FULL", "DemoProfile"]
