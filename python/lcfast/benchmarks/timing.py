"""How lcfast's benchmarks take time: in-process calls through `torch.utils.benchmark`, whole runs
(a training run, a tokenize run, a child process) by their wall and CPU time.

Stdlib and torch only at import time: bench/bench_track_overhead.py loads this package from a file
path under another name so that the same timing code measures an older lcfast (its PYTHONPATH).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch

#: the least time_call spends timing (blocked_autorange's own default), budget permitting
MIN_RUN_S = 0.2

__all__ = ["MIN_RUN_S", "clock", "benchmark_timer", "time_call", "time_median", "time_best", "Stopwatch"]


def clock() -> float:
    """Seconds of `timeit.default_timer`, after synchronizing the accelerator when there is one
    (torch.utils.benchmark's own clock)."""
    from torch.utils.benchmark.utils.timer import timer

    return timer()


def benchmark_timer(fn: Callable[[], Any], num_threads: int | None = None):
    """A `torch.utils.benchmark.Timer` of `fn()` with `num_threads` torch threads (default: this process's)."""
    from torch.utils import benchmark

    # benchmark.Timer defaults to one thread; the benchmarks measure with the process's setting
    n = torch.get_num_threads() if num_threads is None else int(num_threads)
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=n)


def time_call(fn: Callable[[], Any], repeats: int, budget_s: float,
              num_threads: int | None = None) -> tuple[Any, float, list[float]]:
    """(result of one warm-up call, median seconds per call, seconds per call of each timed block).

    The warm-up call compiles Triton kernels and gives the result the agreement check uses. Then
    `torch.utils.benchmark.Timer.blocked_autorange` times `fn` for at least `repeats` times the
    warm-up call's duration and at least MIN_RUN_S, capped by what is left of `budget_s` (at least
    one block; blocks of several calls when one call is short next to the timer's overhead). The Timer synchronizes the
    accelerator around each block, so CUDA work is timed to its end."""
    t0 = clock()
    result = fn()
    first = clock() - t0
    # a floor of torch.utils.benchmark's default run time: a fast call gets several blocks, not one
    min_run = min(max(budget_s - first, 0.0), max(repeats * first, MIN_RUN_S))
    m = benchmark_timer(fn, num_threads).blocked_autorange(min_run_time=min_run)
    return result, float(m.median), [float(t) for t in m.times]


def time_median(fn: Callable[[], Any], min_run_time: float = 0.3, num_threads: int | None = None) -> float:
    """Median seconds per call of `fn` (torch.utils.benchmark, blocked autorange of `min_run_time`)."""
    return float(benchmark_timer(fn, num_threads).blocked_autorange(min_run_time=min_run_time).median)


def time_best(fn: Callable[[], Any], repeats: int = 3, num_threads: int | None = None) -> float:
    """Fastest seconds per call of `fn` over the blocks that `time_call` times (at least `repeats`
    warm-up durations): the "best of" figure, for calls whose slow runs are other processes' load."""
    return min(time_call(fn, repeats, math.inf, num_threads)[2])


class Stopwatch:
    """Wall and CPU time of a whole run (a training run, a tokenize run, a child process):

        with Stopwatch() as sw:
            run()
        sw.wall_s, sw.cpu_s, sw.loadavg_start, sw.loadavg_end

    cpu_s is this process's CPU time (`time.process_time`); children_cpu_s that of the child
    processes waited for meanwhile. The load average is kept at both ends: the dev machines are
    shared, and a run's time means little without it."""

    def __init__(self) -> None:
        self.wall_s = self.cpu_s = self.children_cpu_s = 0.0
        self.loadavg_start = self.loadavg_end = (0.0, 0.0, 0.0)

    def __enter__(self) -> Stopwatch:
        self.loadavg_start = os.getloadavg()
        t = os.times()
        self._children0 = t.children_user + t.children_system
        self._cpu0, self._wall0 = time.process_time(), time.perf_counter()
        return self

    @property
    def elapsed_s(self) -> float:
        """Wall seconds since the start (also while the run is still going)."""
        return time.perf_counter() - self._wall0

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall0
        self.cpu_s = time.process_time() - self._cpu0
        t = os.times()
        self.children_cpu_s = t.children_user + t.children_system - self._children0
        self.loadavg_end = os.getloadavg()
