"""The state files of `lcfast collect`: their names and the checks a saved state must pass to be
resumed or merged (shared by lcfast.pipeline.collect and lcfast.pipeline.collect.parts).

A collect output folder holds one state per pass (`PASS_FILES`), a safetensors accumulator whose
header metadata (strings) says what it was written for: model, shard and means fingerprints,
window length, options, windows done of how many, the batch size and the pass's counters and
timings (`progress`, JSON). A torchrun rank or a `--shard i/n` part saves its own share under
`part_path` (`<pass>.rank<i>of<n>.safetensors`); `collect.json` summarises a finished collection.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lcfast.errors import DataError
from lcfast.io import check_meta, read_tensor_meta

STATE_VERSION = "1"
COLLECT_JSON = "collect.json"
PASS_FILES = {
    "train": "train_stats.safetensors",
    "train_exact": "train_exact.safetensors",
    "val": "val_ncc.safetensors",
}
#: pass kind of each state file name, in pass order
PASS_KINDS = {f: k for k, f in PASS_FILES.items()}
PART_RE = re.compile(r"^(?P<stem>.+)\.rank(?P<i>\d+)of(?P<n>\d+)\.safetensors$")

_RESTART_HINT = "; delete it or rerun with --restart"


def part_path(final: Path, rank: int, world: int) -> Path:
    """The state of part `rank` of `world` of the pass whose state is `final` (matches PART_RE)."""
    return final.with_name(f"{final.stem}.rank{rank}of{world}{final.suffix}")


def read_state_meta(path: Path) -> dict[str, str]:
    """The metadata dict of a safetensors state file (header only; DataError when unreadable)."""
    return read_tensor_meta(path, "state file", _RESTART_HINT)


def check_state(path: Path, meta: dict[str, str], want: dict[str, str]) -> None:
    """Refuse (DataError naming the file and the first difference) a state written for another
    model, shard, set of means or options than `want`."""
    check_meta(path, meta, want, "; rerun with --restart to discard it, or use another --out")


def read_progress(meta: dict[str, str], path: Path, hint: str = "") -> dict:
    """The counters and timings a state saved (its `progress` metadata), {} when it has none."""
    try:
        p = json.loads(meta.get("progress", "{}"))
    except ValueError:
        raise DataError(f"{path}: corrupt progress metadata{hint}") from None
    return p if isinstance(p, dict) else {}


def interrupted_note(out_dir: Path, restart: bool = False, saved: bool = False, existed: bool = True) -> str:
    """What an interrupted `collect` kept in `out_dir`: its latest resume state, or none yet. With
    `--restart` the states there before are ignored, so they are named only once this run saved
    one of its own (`saved`), and the same command would start over again. `existed`: whether
    `out_dir` was there before the command."""
    if restart and not saved:
        return (f"nothing saved yet by this --restart{f': {out_dir} is as it was' if existed else ''}; "
                "rerun the same command to start over")
    states = sorted((p for p in Path(out_dir).glob("*.safetensors")
                     if p.is_file() and (p.name in PASS_KINDS or PART_RE.match(p.name))),
                    key=lambda p: p.stat().st_mtime)
    if not states:
        return f"no resume state in {out_dir} yet; rerun the same command to start again"
    p = states[-1]
    try:
        meta = read_tensor_meta(p, "state file")
        where = (f" ({meta.get('pass', '?')} pass at window {meta.get('windows_done', '?')} "
                 f"of {meta.get('n_windows', '?')})")
    except DataError:
        where = ""
    how = ("rerun without --restart to resume (the same command starts over)" if restart
           else "rerun the same command to resume")
    return f"resume state {p}{where} is intact; {how}"


__all__ = ["STATE_VERSION", "COLLECT_JSON", "PASS_FILES", "PASS_KINDS", "PART_RE", "part_path", "read_state_meta",
           "check_state", "read_progress", "interrupted_note"]
