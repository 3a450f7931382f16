"""Fault-injection points for crash-safety tests (inert unless LCFAST_TEST_KILL_AT is set).

Every atomic save in lcfast calls `kill_point(name)` after the new content is complete and fsynced
in its temporary file/folder and *before* the rename that publishes it, `name` being the final
file or folder name (e.g. "model.safetensors", "epoch_2", "train_stats.safetensors"). Outputs
published together (`lcfast.io.staged`: shards + meta.json, an analysis) are all complete by the
time the first of them reaches its save point.

    LCFAST_TEST_KILL_AT=<pattern>[@<n>]

makes the process SIGKILL itself the n-th time (default: first) it reaches a save point whose name
matches <pattern> (fnmatch). Tests use it to check that a kill during a save leaves the previous
file intact and that a rerun resumes correctly. Under torchrun every rank sees the variable;

    LCFAST_TEST_KILL_RANK=<r>

limits it to the process whose RANK is r (the others run on and see their peer die).
"""

from __future__ import annotations

import fnmatch
import os
import signal

ENV = "LCFAST_TEST_KILL_AT"
RANK_ENV = "LCFAST_TEST_KILL_RANK"
_hits: dict[str, int] = {}


def _spec() -> tuple[str, int] | None:
    raw = os.environ.get(ENV)
    if not raw:
        return None
    only = os.environ.get(RANK_ENV)
    if only is not None and only.strip() != os.environ.get("RANK", "0").strip():
        return None
    pat, _, n = raw.partition("@")
    try:
        return pat, max(1, int(n)) if n else 1
    except ValueError:
        return pat, 1


def kill_point(name: str) -> None:
    """SIGKILL this process here if LCFAST_TEST_KILL_AT selects this save point (see module doc)."""
    spec = _spec()
    if spec is None:
        return
    pat, n = spec
    if not fnmatch.fnmatchcase(name, pat):
        return
    _hits[pat] = _hits.get(pat, 0) + 1
    if _hits[pat] == n:
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["kill_point", "ENV", "RANK_ENV"]
