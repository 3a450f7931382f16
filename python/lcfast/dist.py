"""torch.distributed helpers: one process per device, launched by `torchrun … -m lcfast …`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `init()` reads them and
starts the default process group (NCCL when the job runs on CUDA devices, gloo on CPU). Without
those variables (a plain `lcfast …`) everything here is a no-op describing a world of one, so
library code calls these helpers unconditionally:

    ctx = dist.init(device)        # Context(rank, world, local_rank, device, backend, started)
    if ctx.is_main: write files
    dist.barrier()
    dist.all_reduce_sum(t)         # in place; returns t (identity for world 1)
    with dist.together():          # a block any rank may fail: then every rank raises
        read this rank's files
    dist.shutdown(ctx, ok=True)    # every exit path: barrier (when ok), then destroy the group

`ctx.started` is True only when `init` created the group, so `shutdown(ctx)` destroys only a
group it started (tests that build their own group keep it, and end it with `close()`).

Every collective waits at most the group's timeout (`init(timeout_s=…)`, `--dist-timeout`, the
LCFAST_DIST_TIMEOUT environment variable; default 600 s). A rank that waits longer, or whose peer
went away, raises `CollectiveError` (exit 1) with one line naming the collective and the rank(s)
it waited for — the ranks record in the job's store which collective each entered last.

Teardown (torch 2.4 with gloo, issues 28/29): a finished collective's work object can still be held
by one of gloo's worker threads after the caller's `wait()` returned. When it holds the last
reference to a tensor whose Python object is already gone, dropping it takes the GIL. Destroying the
group runs ProcessGroupGloo's destructor, which joins those threads *while holding the GIL*: the
two wait for each other forever (the resume hang). And a group kept alive to the end of the process
(DDP holds one) meets interpreter finalization instead: the worker's GIL request then ends the
thread by a forced unwind through a noexcept destructor, std::terminate, SIGABRT ("terminate called
without an active exception"). So `close` destroys the group's bookkeeping but keeps the object
(`_RETIRED`: its destructor never runs under the GIL; newer torch has already shut it down inside
destroy_process_group), and records it as native work left running, so that the console script
leaves with os._exit (lcfast.cli.app.main) instead of finalizing the interpreter around gloo's threads.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lcfast.errors import DataError, UsageError
from lcfast.validate import DIST_TIMEOUT_MAX

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT_ENV = "LCFAST_DIST_TIMEOUT"
#: seconds a rank waits in one collective before it stops with CollectiveError. torch's own default
#: (30 min) would let a job whose peer died keep its reservation for half an hour; rank 0 writing a
#: checkpoint or a collect state while the others wait takes seconds to a few minutes.
DEFAULT_TIMEOUT_S = 600.0
_MARK = "lcfast/at/"  # + rank: "<n> <name>", the collective that rank entered last (the job's store)


class CollectiveError(DataError):
    """A collective that timed out, or whose peer went away (exit code 1): one line naming the
    collective, this rank and the rank(s) it waited for."""


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    started: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True inside a torchrun-launched process (WORLD_SIZE set)."""
    return "WORLD_SIZE" in os.environ


def in_job() -> bool:
    """True when this process belongs to a job of several: a process group is initialised, or
    torchrun launched it with WORLD_SIZE > 1 (then `init` joins the group)."""
    return is_initialized() or (launched() and _env_int("WORLD_SIZE", 1) > 1)


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        raise UsageError(f"environment variable {name}={v!r} is not an integer (set by torchrun)") from None


def is_initialized() -> bool:
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    if is_initialized():
        import torch.distributed as tdist

        return tdist.get_rank()
    return 0


def world_size() -> int:
    if is_initialized():
        import torch.distributed as tdist

        return tdist.get_world_size()
    return 1


def is_main() -> bool:
    """Rank 0 of the process group, or (no group, e.g. after it was shut down) of the torchrun job."""
    return rank() == 0 if is_initialized() else _env_int("RANK", 0) == 0


def resolve_device(device: str | torch.device | None, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """The device of this process — the one device resolution of every command (train, collect,
    measure, features, the demo): `auto` → cuda:LOCAL_RANK when CUDA is there, else cpu; `cuda` (no
    index) → cuda:LOCAL_RANK. UsageError naming --device for anything torch does not know, CUDA
    without CUDA, or a device type other than cpu/cuda (mps too, but not in a `distributed` job)."""
    if isinstance(device, torch.device):
        dev = device
    else:
        d = (device or "auto").strip().lower()
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(d)
        except (RuntimeError, ValueError, TypeError):
            raise UsageError(f"--device {device!r} is not a torch device (use auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    elif dev.type == "mps" and not distributed:
        pass
    elif dev.type != "cpu":
        if distributed:
            raise UsageError(f"--device {device}: distributed runs support cpu and cuda devices only")
        raise UsageError(f"--device {device}: unsupported device type {dev.type!r}")
    return dev


def timeout_seconds(value: float | str | None = None, flag: str = "--dist-timeout") -> float:
    """The collectives' timeout: `value` (a flag) if given, else LCFAST_DIST_TIMEOUT, else the
    default; UsageError naming where a bad value came from."""
    src = flag
    if value is None:
        value, src = os.environ.get(TIMEOUT_ENV), f"environment variable {TIMEOUT_ENV}"
        if value is None or not str(value).strip():
            return DEFAULT_TIMEOUT_S
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (0 < t <= DIST_TIMEOUT_MAX):
        raise UsageError(f"{src} {value!r}: the collectives' timeout must be a positive number of seconds, "
                         f"at most {DIST_TIMEOUT_MAX:g}")
    return t


def init(device: str | torch.device | None = "auto", timeout_s: float | None = None) -> Context:
    """Join the torchrun job (if any) and return this process's Context. `timeout_s`: how long a
    collective may wait (`timeout_seconds`: the flag, else LCFAST_DIST_TIMEOUT, else 600 s).

    Idempotent: with a process group already initialised (by a caller or a test) it is reused."""
    local_rank = _env_int("LOCAL_RANK", 0)
    if is_initialized():
        import torch.distributed as tdist

        dev = resolve_device(device, local_rank, distributed=tdist.get_world_size() > 1)
        return Context(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, tdist.get_backend(), False)
    if not launched() or _env_int("WORLD_SIZE", 1) <= 1:
        dev = resolve_device(device, local_rank)
        return Context(0, 1, local_rank, dev, None, False)
    import torch.distributed as tdist

    if not tdist.is_available():
        raise UsageError("this torch build has no torch.distributed support (needed under torchrun)")
    dev = resolve_device(device, local_rank, distributed=True)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    kw = {"device_id": dev} if dev.type == "cuda" else {}
    timeout = datetime.timedelta(seconds=timeout_seconds(timeout_s))
    tdist.init_process_group(backend=backend, timeout=timeout, **kw)
    return Context(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, backend, True)


#: destroyed groups, kept so that their destructor never runs under the GIL (module doc: Teardown)
_RETIRED: list = []


def shutdown(ctx: Context, ok: bool = True) -> None:
    """End the process group if `init` created it (`close`). `ok`: the command returned normally,
    so every rank is on its way to the same last barrier; after an exception (an interrupt, a lost
    peer, an error) no rank waits there for one that may be gone."""
    if ctx.started:
        close(ok)


def close(ok: bool = True) -> None:
    """End the default process group in order: a barrier (when `ok`: every rank has finished every
    collective, so none tears its connections down under a peer still reading), then
    destroy_process_group; the group object is retired, not destroyed (module doc: Teardown)."""
    if not is_initialized():
        return
    import torch.distributed as tdist

    from lcfast.errors import left_running

    pg = tdist.group.WORLD
    try:
        if ok:
            barrier("the closing barrier")
    finally:
        tdist.destroy_process_group()
        if pg is not None:
            _RETIRED.append(pg)
            left_running(pg)


def _store():
    from torch.distributed import distributed_c10d as c10d

    try:
        return c10d._get_default_store()
    except (RuntimeError, ValueError, AttributeError):
        return None


_entered = {"n": 0}


@contextlib.contextmanager
def collective(name: str, mark: bool = True) -> Iterator[None]:
    """The block runs collectives (every rank calls it at the same point): a timeout or a lost
    peer inside becomes CollectiveError naming `name`, this rank and the ranks that are not there
    (from the marks each rank leaves in the job's store). `mark=False` for a collective of every
    training step: a store round trip per step and rank would load the store of a large job (the
    message then names the ranks behind the last marked collective, or all). A plain block for a
    world of one."""
    if not (is_initialized() and world_size() > 1):
        yield
        return
    me = rank()
    store = _store()
    if mark:
        _entered["n"] += 1
        if store is not None:
            with contextlib.suppress(Exception):  # the mark only improves the message
                store.set(f"{_MARK}{me}", f"{_entered['n']} {name}")
    n = _entered["n"]
    t0 = time.monotonic()
    try:
        yield
    except RuntimeError as e:  # torch's DistBackendError / gloo's errors are RuntimeErrors
        if not _is_comm_error(e):
            raise
        label = f"collective #{n} {name}" if mark else f"{name} (after collective #{n})"
        raise CollectiveError(_waited_message(label, n, me, time.monotonic() - t0, e, store)) from None


def _is_comm_error(e: BaseException) -> bool:
    import torch.distributed as tdist

    kinds = tuple(k for k in (getattr(tdist, "DistError", None),) if isinstance(k, type))
    msg = str(e)
    return isinstance(e, kinds) or any(s in msg for s in (
        "gloo", "Gloo", "NCCL", "Timed out", "timed out", "Connection closed", "Connection reset", "Broken pipe"))


def _waited_message(label: str, n: int, me: int, waited: float, e: BaseException, store) -> str:
    """One line: which collective, this rank, how long, and the ranks that never reached it."""
    behind, where = [], {}
    for p in range(world_size()):
        if p == me:
            continue
        mark = None
        if store is not None:
            with contextlib.suppress(Exception):
                if store.check([f"{_MARK}{p}"]):
                    mark = store.get(f"{_MARK}{p}").decode()
        seen = int(mark.split(" ", 1)[0]) if mark else 0
        if seen < n:
            behind.append(p)
            where[p] = f"last in #{seen} {mark.split(' ', 1)[1]}" if mark else "in no collective yet"
    if not behind:  # every peer got there: the one that left is unknown, name them all
        behind = [p for p in range(world_size()) if p != me]
    peers = ", ".join(f"rank {p}" + (f" ({where[p]})" if p in where else "") for p in behind)
    timed_out = "timed out" in str(e).lower()
    how = f"waited {waited:.0f} s (the timeout)" if timed_out else f"lost its peer after {waited:.1f} s"
    first = " ".join(str(e).split())[:200]
    return (f"rank {me} {how} in {label}, for {peers}; rerun the same command to resume "
            f"(--dist-timeout / {TIMEOUT_ENV} sets the wait) [{first}]")


def barrier(name: str = "a barrier") -> None:
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        with collective(name):
            if tdist.get_backend() == "nccl":
                tdist.barrier(device_ids=[torch.cuda.current_device()])
            else:
                tdist.barrier()


def all_reduce_sum(t: torch.Tensor, name: str = "a sum (all_reduce)") -> torch.Tensor:
    """Sum `t` over all ranks, in place (identity for a world of one); returns t."""
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        with collective(name):
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_min(t: torch.Tensor, name: str = "a minimum (all_reduce)") -> torch.Tensor:
    """Minimum of `t` over all ranks, in place (identity for a world of one); returns t."""
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        with collective(name):
            tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return t


def broadcast_object(obj, src: int = 0, name: str = "a broadcast"):
    """`obj` of rank `src` on every rank (identity for a world of one)."""
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        box = [obj]
        with collective(name):
            tdist.broadcast_object_list(box, src=src)
        return box[0]
    return obj


def agree(exc: BaseException | None) -> None:
    """Collective error check, called by every rank at the same point: if any rank failed (`exc`
    not None), every rank raises — a failing rank its own exception, the others an error of the
    same kind (exit code) with the message of the lowest failing rank — so no rank is left waiting
    in a later collective. A no-op for a world of one (the caller raises its own error)."""
    if not (is_initialized() and world_size() > 1):
        return
    import torch.distributed as tdist

    from lcfast.errors import LcfastError

    mine = None
    if exc is not None:
        code = exc.exit_code if isinstance(exc, LcfastError) else 1
        mine = (code, str(exc) or type(exc).__name__)
    msgs = [None] * world_size()
    with collective(f"the agreement after {_caller()}"):
        tdist.all_gather_object(msgs, mine)
    bad = [m for m in msgs if m is not None]
    if not bad:
        return
    if exc is not None:
        raise exc
    code, msg = bad[0]
    raise (UsageError if code == 2 else DataError)(msg)


@contextlib.contextmanager
def together() -> Iterator[None]:
    """Run a block that any one rank may fail, and make every rank agree on the outcome at its end
    (`agree`): a rank whose block raised re-raises its error, the others raise one of the same kind,
    so no rank goes on to a collective that the failed one will never join. Every rank must enter
    the block (and reach its end) at the same point of the program. A plain block for a world of one."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised on this rank by agree, reported to the others
        agree(e)
        raise
    agree(None)


def _caller() -> str:
    """`function (file:line)` of the lcfast code that called agree/together: names the block."""
    import sys

    f = sys._getframe(1)
    while f is not None and (f.f_code.co_filename == __file__ or "contextlib" in f.f_code.co_filename):
        f = f.f_back
    if f is None:
        return "a block"
    return f"{f.f_code.co_name} ({os.path.basename(f.f_code.co_filename)}:{f.f_lineno})"


def rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """(start, count) of rank's contiguous share of n items (the first n % world ranks get one more)."""
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"rank must be in [0, world), got rank {rank} of world {world}")
    base, rem = divmod(int(n), world)
    start = rank * base + min(rank, rem)
    return start, base + (1 if rank < rem else 0)


__all__ = ["Context", "CollectiveError", "init", "shutdown", "close", "collective", "timeout_seconds", "launched",
           "in_job", "is_initialized", "rank", "world_size", "is_main", "barrier", "all_reduce_sum", "all_reduce_min",
           "broadcast_object", "agree", "together", "rank_slice", "resolve_device", "TIMEOUT_ENV", "DEFAULT_TIMEOUT_S"]
