"""Argument checks shared by the CLI options (`lcfast.cli.options`) and the Python API.

Every numeric flag goes through one of `integer`, `number` or `seed`, so 1e20, nan, inf, a
negative or a meaningless zero is a `UsageError` (exit 2) naming the flag, raised before any
work starts. Values that pass the range check can still ask for more memory than the machine
has (`--batch-size 1000000000`): the commands estimate their peak memory from the arguments and
call `check_memory`, which refuses before anything is allocated or written, with the estimate
in the message. The estimates are deliberately rough (the largest terms only): they catch
requests that cannot run, not ones that would merely be tight.
"""

from __future__ import annotations

import math
import numbers
import os

from lcfast.errors import UsageError

INT64_MAX = 2**63 - 1
#: seeds feed torch.manual_seed and the Rust token engine (u64): 0 ≤ seed < 2^64
SEED_MAX = 2**64 - 1
#: CDNV divides by (‖μ_c − μ_c'‖²)^p: beyond this power float64 over/underflows for ordinary distances
CDNV_POWER_MAX = 16.0
#: `collect --save-every` above this many seconds (about four months) is a typo, not a plan
SAVE_EVERY_MAX = 1e7
#: `--dist-timeout` / LCFAST_DIST_TIMEOUT: the same bound (datetime.timedelta overflows near 1e14 s)
DIST_TIMEOUT_MAX = 1e7
#: worker threads of the token engine
THREADS_MAX = 1024
#: `bench --repeats`: timed calls per implementation (a paper-size row takes seconds per call)
BENCH_REPEATS_MAX = 10_000


def _show(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return {INT64_MAX: "2^63 − 1", SEED_MAX: "2^64 − 1"}.get(v, str(v)) if isinstance(v, int) else str(v)


def _range_text(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"between {_show(lo)} and {_show(hi)}"
        return f"in {'(' if lo_open else '['}{_show(lo)}, {_show(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '≥'} {_show(lo)}"
    if hi is not None:
        return f"{'<' if hi_open else '≤'} {_show(hi)}"
    return "finite"


def integer(flag: str, v, *, min: int | None = None, max: int | None = INT64_MAX, what: str = "an integer") -> int:
    """`v` as an int in [min, max] (bool, float and anything else refused); UsageError naming `flag`."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)  # 4.0 from a config file is 4
        else:
            raise UsageError(
                f"{flag} {_show(v)}: must be {what} {_range_text(min, None if max == INT64_MAX else max)}".rstrip()
            )
    v = int(v)
    if (min is not None and v < min) or (max is not None and v > max):
        # an int64 bound is only worth naming to whoever crossed it
        shown_max = max if (max is not None and (v > max or max not in (INT64_MAX,))) else None
        raise UsageError(f"{flag} {v}: must be {what} {_range_text(min, shown_max)}")
    return v


def number(flag: str, v, *, min: float | None = None, max: float | None = None,
           min_open: bool = False, max_open: bool = False) -> float:
    """`v` as a finite float in the given range (nan and ±inf always refused)."""
    try:
        f = float(v)
        ok_type = not isinstance(v, (bool, str))
    except (TypeError, ValueError, OverflowError):
        ok_type, f = False, float("nan")
    rng = _range_text(min, max, min_open, max_open)
    if not ok_type or not math.isfinite(f):
        raise UsageError(f"{flag} {_show(v)}: must be a finite number" + (f" {rng}" if rng != "finite" else ""))
    if (min is not None and (f < min or (min_open and f == min))) or (
            max is not None and (f > max or (max_open and f == max))):
        raise UsageError(f"{flag} {_show(v)}: must be a number {rng}")
    return f


def seed(flag: str, v) -> int:
    """A seed: an integer in [0, 2^64 − 1] (what torch.manual_seed and the token engine accept)."""
    return integer(flag, v, min=0, max=SEED_MAX)


# -- memory -------------------------------------------------------------------------------------
def fmt_bytes(n: float) -> str:
    """1536 -> '1.5 KiB' (binary units; 'PiB' and beyond as powers of ten of them)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            break
        n /= 1024
    if unit == "TiB" and n >= 1024:
        return f"{n / 1024:.3g} PiB"
    return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"


def _cgroup_limit() -> int | None:
    """Bytes still allowed by the cgroup (v2 or v1) this process runs in, if it sets a limit."""
    for lim, cur in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                     ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(lim) as f:
                raw = f.read().strip()
            if raw == "max":
                return None
            limit = int(raw)
            if limit >= 1 << 60:  # v1 "no limit"
                return None
            with open(cur) as f:
                used = int(f.read().strip())
            return max(0, limit - used)
        except (OSError, ValueError):
            continue
    return None


def available_memory(device=None) -> tuple[int, str]:
    """(bytes free for a new allocation, where) on `device`: free device memory on CUDA, else
    MemAvailable of /proc/meminfo (or physical memory) capped by a cgroup limit.
    LCFAST_MEMORY_AVAILABLE (bytes) overrides it (tests, or a user who knows better)."""
    env = os.environ.get("LCFAST_MEMORY_AVAILABLE")
    if env:
        try:
            return int(float(env)), "LCFAST_MEMORY_AVAILABLE"
        except ValueError:
            raise UsageError(f"LCFAST_MEMORY_AVAILABLE={env!r}: expected a number of bytes") from None
    dev_type = getattr(device, "type", str(device or "cpu").split(":")[0])
    if dev_type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 62, "unknown"
    cg = _cgroup_limit()
    if cg is not None and cg < avail:
        return cg, "allowed by the cgroup"
    return avail, "available"


def check_memory(flags: str, what: str, parts: dict[str, float], device=None, hint: str = "") -> int:
    """Refuse (UsageError) when the estimated peak `sum(parts)` exceeds the memory available on
    `device`. `flags` names the flags (with their values) that drive the estimate, largest first;
    `parts` names its terms. Returns the estimate in bytes."""
    need = int(sum(parts.values()))
    have, where = available_memory(device)
    if need > have:
        terms = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 0)
        raise UsageError(
            f"{flags}: {what} would need about {fmt_bytes(need)} of memory ({terms}), more than the "
            f"{fmt_bytes(have)} {where}{'; ' + hint if hint else ''}"
        )
    return need


__all__ = [
    "BENCH_REPEATS_MAX",
    "CDNV_POWER_MAX",
    "INT64_MAX",
    "SAVE_EVERY_MAX",
    "DIST_TIMEOUT_MAX",
    "SEED_MAX",
    "THREADS_MAX",
    "available_memory",
    "check_memory",
    "fmt_bytes",
    "integer",
    "number",
    "seed",
]
