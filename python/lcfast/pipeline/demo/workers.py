"""Training and collection jobs in worker processes on CPU (one intra-op thread each), with one
progress bar over the jobs fed by the workers' reports, and a stop that leaves no worker behind."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lcfast.data.datadir import DataDir
from lcfast.pipeline.demo.reuse import read_json
from lcfast.pipeline.train_config import TrainConfig

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


def train_job(data_dir: str, run_dir: str, hp: TrainConfig, kw: dict) -> dict:
    from lcfast.pipeline.train import run_training

    steps = hp.epochs * (hp.steps_per_epoch or 0)
    report = (lambda info: _report(info["step"] / steps)) if _REPORTS is not None and steps else None
    m = run_training(data_dir, run_dir, hp, **kw, callback=report)
    return {k: v for k, v in m.items() if isinstance(v, (int, float, str, bool)) or v is None}


def collect_job(run_dir: str, checkpoint: str, opts: dict, progress: bool) -> list[dict]:
    from lcfast.pipeline.collect import CollectOptions, collect

    on_progress = _collect_reporter(Path(run_dir), checkpoint, opts) if _REPORTS is not None else None
    return collect(run_dir, checkpoint=checkpoint, opts=CollectOptions(**opts), progress=progress,
                   on_progress=on_progress)


def _collect_reporter(run: Path, checkpoint: str, opts: dict):
    """(worker processes) An `on_progress(kind, done, total)` for collect that reports the job's
    share done: each pass weighs what its shard holds, every checkpoint a train and a val pass."""
    from lcfast.data.shards import TokenShard
    from lcfast.model.sources import run_epochs

    cfg = read_json(run / "config.json")
    data = Path(cfg.get("data", {}).get("dir", "")) if isinstance(cfg.get("data"), dict) else None
    try:
        files = DataDir(data)
        weight = {"train": float(TokenShard(str(files.train)).n_tokens),
                  "val": float(TokenShard(str(files.val)).n_tokens)}
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


def worker_count(device: str, n_jobs: int) -> int:
    import os

    import torch

    if n_jobs <= 1 or device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, n_jobs))


@dataclass
class _Pool:
    """Worker processes and the queue their jobs report progress on."""

    executor: object  # concurrent.futures.ProcessPoolExecutor
    reports: object  # multiprocessing Queue of (stage tag, job index, fraction done)

    def shutdown(self) -> None:
        self.executor.shutdown()


def make_pool(workers: int) -> _Pool | None:
    """`workers` spawned processes of one thread each (None for in-process work)."""
    if workers <= 1:
        return None
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    return _Pool(ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(reports,)), reports)


def run_jobs(fn, jobs: list[tuple], labels: list[str], pool, console, title: str, on_done,
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
