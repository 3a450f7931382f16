"""Collection split into parts for clusters without a shared job: `lcfast collect --shard i/n` + `lcfast merge`.

Part i of n is what rank i of a torchrun job of n processes does (`TokenShard.seq_windows(rank=i,
world=n)`: contiguous, disjoint blocks covering every window once) and it saves its state under the
same name, `<pass>.rank<i>of<n>.safetensors` (metadata: everything a single-process state has plus
rank/world, n_windows = the part's windows). Instead of an all-reduce at the end of the pass,
`lcfast merge OUT` adds the n finished parts of a pass into `<pass>.safetensors` (ClassStats /
NCCStats `.merge`: equal to the single-process result up to float64 rounding). Passes that need the
train means (the exact second pass, the val pass) run as parts only once the train pass is merged.

`merge` refuses parts of different models, shards, means or options (their fingerprints in the
metadata), a part listed twice or missing, and unfinished parts — writing nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lcfast.errors import DataError, UsageError
from lcfast.io import meta_mismatch
from lcfast.pipeline.collect.state import (
    PART_RE,
    PASS_KINDS,
    read_progress,
    read_state_meta,
)

#: metadata that must agree between the parts of one pass (everything but the part's own progress)
_PART_KEYS_VARY = {"rank", "windows_done", "progress", "n_windows", "batch_size", "merged_from",
                   "tokens_seen", "positions_seen", "lcfast"}  # the last three: written by the accumulators


@dataclass(frozen=True)
class Part:
    """Part `index` of `count` of a collection split between processes without a group (`--shard i/n`)."""

    index: int
    count: int

    @property
    def spec(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard_spec(spec: str | None) -> Part | None:
    """'i/n' (0 ≤ i < n) → Part; None → None; anything else → UsageError naming --shard."""
    if spec is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m:
        raise UsageError(f"--shard {spec}: expected i/n with 0 ≤ i < n, e.g. 0/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or i >= n:
        raise UsageError(f"--shard {spec}: expected i/n with 0 ≤ i < n, e.g. 0/4")
    return Part(i, n)


def combine_progress(parts: list[dict]) -> dict:
    """Sum the counters and timings of the parts' progress metadata (rates are not summed)."""
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
    for k in ("tokens", "skipped_nonfinite", "val_correct"):
        if k in out:
            out[k] = int(out[k])
    return out


def find_part_sets(out_dir: Path) -> dict[str, dict[int, dict[int, Path]]]:
    """{pass file name: {n: {i: path}}} of the part states in a collect output dir."""
    sets: dict[str, dict[int, dict[int, Path]]] = {}
    for p in sorted(Path(out_dir).glob("*.rank*of*.safetensors")):
        m = PART_RE.match(p.name)
        if not m:
            continue
        name = f"{m.group('stem')}.safetensors"
        sets.setdefault(name, {}).setdefault(int(m.group("n")), {})[int(m.group("i"))] = p
    return sets


def merge_dir(out_dir: str | Path) -> list[dict]:
    """`lcfast merge OUT`: merge every complete set of shard parts in `out_dir` into its pass file.

    Returns one record per pass file:
    {"file", "parts", "status": "merged" | "already merged"}. Raises DataError for mixed or
    incomplete sets; writes nothing then."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise UsageError(f"OUT {out_dir}: no such directory (the --out of the 'lcfast collect --shard' runs)")
    sets = find_part_sets(out_dir)
    if not sets:
        raise DataError(f"{out_dir}: no part states "
                        "(*.rank<i>of<n>.safetensors from 'lcfast collect --shard i/n') to merge")
    plans = []
    for name, by_n in sorted(sets.items(), key=lambda kv: list(PASS_KINDS).index(kv[0]) if kv[0] in PASS_KINDS else 99):
        if name not in PASS_KINDS:
            raise DataError(f"{out_dir / name}: unknown pass file (expected one of {', '.join(PASS_KINDS)})")
        if len(by_n) > 1:
            raise DataError(f"{out_dir}: {name} has parts of different splits "
                            f"({', '.join(f'of {n}' for n in sorted(by_n))}); keep one")
        (n, parts), = by_n.items()
        missing = sorted(set(range(n)) - set(parts))
        if missing:
            raise DataError(f"{out_dir}: {name}: shard(s) {', '.join(f'{i}/{n}' for i in missing)} missing; run "
                            f"'lcfast collect … --shard i/{n}' for them first")
        metas = {i: read_state_meta(p) for i, p in sorted(parts.items())}
        ref_i = 0
        ref = {k: v for k, v in metas[ref_i].items() if k not in _PART_KEYS_VARY}
        for i, m in metas.items():
            p = parts[i]
            if (m.get("rank"), m.get("world")) != (str(i), str(n)):
                raise DataError(f"{p}: its metadata says part {m.get('rank')}/{m.get('world')}, the file name {i}/{n}")
            mine = {k: v for k, v in m.items() if k not in _PART_KEYS_VARY}
            bad = meta_mismatch(mine, {k: ref.get(k) for k in sorted(set(ref) | set(mine))})
            if bad is not None:
                k, what, have, want = bad
                raise DataError(f"{p}: cannot merge with {parts[ref_i].name}: "
                                f"written for {what} ({k} {have!r} vs {want!r})")
            done, count = int(m.get("windows_done", -1)), int(m.get("n_windows", -2))
            if done != count:
                raise DataError(f"{p}: shard {i}/{n} is unfinished ({done} of {count} windows); rerun it first")
        final = out_dir / name
        if final.exists():
            fm = read_state_meta(final)
            if fm.get("merged_from") == json.dumps({str(i): metas[i].get("progress", "") for i in sorted(metas)},
                                                   sort_keys=True):
                plans.append((name, n, parts, metas, ref, "already merged"))
                continue
            raise DataError(f"{final}: exists and is not the merge of these {n} shards; delete it to merge them")
        plans.append((name, n, parts, metas, ref, "merge"))
    out = []
    for name, n, parts, metas, ref, status in plans:
        if status == "merge":
            _merge_one(out_dir / name, PASS_KINDS[name], parts, metas, ref)
            status = "merged"
        out.append({"file": str(out_dir / name), "parts": n, "status": status})
    return out


def _merge_one(final: Path, kind: str, parts: dict[int, Path], metas: dict[int, dict], ref: dict) -> None:
    from lcfast.stats.classstats import ClassStats
    from lcfast.stats.ncc import NCCStats

    acc = None
    for i in sorted(parts):
        st = NCCStats.load(str(parts[i])) if kind == "val" else ClassStats.load(str(parts[i]))
        acc = st if acc is None else acc.merge(st)
    prog = combine_progress([read_progress(metas[i], parts[i]) for i in sorted(parts)])
    n_windows = sum(int(metas[i]["n_windows"]) for i in metas)
    ref = {k: v for k, v in ref.items() if k != "world"}
    meta = {**ref, "n_windows": str(n_windows), "windows_done": str(n_windows),
            "batch_size": metas[0].get("batch_size", "0"),
            "progress": json.dumps(prog),
            "merged_from": json.dumps({str(i): metas[i].get("progress", "") for i in sorted(metas)}, sort_keys=True)}
    acc.meta = {k: v for k, v in acc.meta.items() if k not in _PART_KEYS_VARY and k != "world"}
    acc.save(str(final), meta=meta)


__all__ = ["Part", "parse_shard_spec", "find_part_sets", "merge_dir", "combine_progress"]
