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

`ctx.started` is True only when `init` created the group, so `shutdown(ctx)` destroys only a
group it started (tests that build their own group keep it).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from lcfast.errors import DataError, UsageError

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


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


def init(device: str | torch.device | None = "auto", timeout_s: float = 1800.0) -> Context:
    """Join the torchrun job (if any) and return this process's Context.

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
    tdist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kw)
    return Context(tdist.get_rank(), tdist.get_world_size(), local_rank, dev, backend, True)


def shutdown(ctx: Context) -> None:
    """Destroy the process group if `init` created it."""
    if ctx.started and is_initialized():
        import torch.distributed as tdist

        tdist.destroy_process_group()


def barrier() -> None:
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        if tdist.get_backend() == "nccl":
            tdist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            tdist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all ranks, in place (identity for a world of one); returns t."""
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    """Minimum of `t` over all ranks, in place (identity for a world of one); returns t."""
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return t


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src` on every rank (identity for a world of one)."""
    if is_initialized() and world_size() > 1:
        import torch.distributed as tdist

        box = [obj]
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


def rank_slice(n: int, rank: int, world: int) -> tuple[int, int]:
    """(start, count) of rank's contiguous share of n items (the first n % world ranks get one more)."""
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"rank must be in [0, world), got rank {rank} of world {world}")
    base, rem = divmod(int(n), world)
    start = rank * base + min(rank, rem)
    return start, base + (1 if rank < rem else 0)


__all__ = ["Context", "init", "shutdown", "launched", "in_job", "is_initialized", "rank", "world_size", "is_main",
           "barrier", "all_reduce_sum", "all_reduce_min", "broadcast_object", "agree", "together", "rank_slice",
           "resolve_device"]
