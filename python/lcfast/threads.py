"""How many CPU threads lcfast's torch work uses: never more than the CPUs this process may run on
and, when the machine is busy, no more than are free.

Why: torch's default is one thread per physical core whatever else runs. On a shared machine each
parallel region then waits for threads the kernel has descheduled, and a measurement that takes
0.9 s alone takes 12 s next to two other jobs (issue 24: 13× slower, where a single-threaded loop
slows 4×). Threads are chosen once, when a command starts:

* ``LCFAST_THREADS=N`` — exactly N (a positive integer; anything else is a usage error);
* else ``OMP_NUM_THREADS`` set — left to torch, which honours it;
* else ``min(available CPUs, max(1, available − other load))``, where the available CPUs are the
  affinity mask capped by a cgroup CPU quota, and the other load is the 1-minute load average
  rounded (taken before this process has done any work, so it is the others').

And OpenMP's threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): a machine that was
quiet when the command started may not stay so (`_passive_wait` has the measurement).

`lcfast doctor`-style reporting: `describe()` says what was chosen and why.
"""

from __future__ import annotations

import math
import os
import sys

from lcfast.errors import UsageError

__all__ = ["available_cpus", "choose_threads", "apply_threads", "describe"]

_CHOICE: dict = {}


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 quota (cpu.max)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def choose_threads(env: dict | None = None, load1: float | None = None,
                   cpus: int | None = None) -> tuple[int | None, str]:
    """(threads or None to leave torch's own choice, why). `env`, `load1`, `cpus` default to this
    process's environment, the 1-minute load average and `available_cpus()`."""
    env = os.environ if env is None else env
    raw = env.get("LCFAST_THREADS", "").strip()
    if raw and raw != "auto":
        try:
            n = int(raw)
        except ValueError:
            n = 0
        if n < 1:
            raise UsageError(f"LCFAST_THREADS must be a positive integer or 'auto', got {raw!r}")
        return n, "LCFAST_THREADS"
    if env.get("OMP_NUM_THREADS", "").strip() and not raw and not _CHOICE.get("set_env"):
        return None, "OMP_NUM_THREADS (left to torch)"
    cpus = available_cpus() if cpus is None else cpus
    if load1 is None:
        try:
            load1 = os.getloadavg()[0]
        except OSError:
            load1 = 0.0
    free = cpus - int(round(load1))
    n = min(cpus, max(1, free))
    return n, f"{cpus} CPUs available, load {load1:.1f}"


def apply_threads() -> int | None:
    """Choose (choose_threads) and apply the thread count for this process: OMP_NUM_THREADS for
    torch to read when it loads. A process that has loaded torch already (a program calling
    lcfast.cli.app.main) owns its thread settings: it is changed only by an explicit LCFAST_THREADS.
    Returns the count (None when left to torch)."""
    n, why = choose_threads()
    _CHOICE.update(threads=n, why=why)
    _passive_wait()
    if n is None:
        return None
    if "torch" in sys.modules:
        if why != "LCFAST_THREADS":
            _CHOICE.update(threads=None, why="torch already loaded by the caller (left as it is)")
            return None
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
        _CHOICE["set_env"] = True
    return n


def _passive_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless the user chose one, before torch loads (OpenMP reads it once).
    Threads that spin at the end of each parallel region steal the CPU from the descheduled
    thread they wait for when the machine is shared: measured 2026-12-07 (load 9.5 on 2 cores,
    measure_embeddings paper, C = 4,096, 82k positions): 2 threads spinning 20.4 s, 2 threads
    passive 5.6 s, 1 thread 4.5 s."""
    if "torch" not in sys.modules and not os.environ.get("OMP_WAIT_POLICY"):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        _CHOICE["passive"] = True


def describe() -> str:
    """What apply_threads chose, in words ('' before it ran)."""
    if not _CHOICE:
        return ""
    n = _CHOICE["threads"]
    passive = ", OMP_WAIT_POLICY=PASSIVE" if _CHOICE.get("passive") else ""
    return f"{'torch default' if n is None else n} threads ({_CHOICE['why']}{passive})"
