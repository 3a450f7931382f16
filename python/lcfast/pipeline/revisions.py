"""A training history: `lcfast collect hf:ORG/NAME --revisions all|A,B,…` collects the cached
revisions of a hub model (Pythia's step0 … step143000) one after another, each into its own
folder OUT/<revision>/ (`lcfast.model.sources.hub_revision_sources` lists them; the per-checkpoint
collection is `lcfast.pipeline.collect`'s, unchanged).

Resumable per revision: a rerun of an interrupted sweep resumes the revision it was on from its saved
states, as any collection does, and skips the revisions already done without loading them
(`done_before`): loading each of 154 Pythia checkpoints only to find its passes finished would cost
more than the check. A revision is skipped only when its collect.json says it was collected from the
same snapshot (commit), the same shards and the same options, its state files are complete and name
the model collect.json names, and no file of the snapshot changed since; anything else goes through
the ordinary path, which reuses, resumes or refuses as for any checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path

from lcfast.errors import DataError
from lcfast.pipeline.collect.state import COLLECT_JSON, read_state_meta


def _options_match(summary: dict, opts) -> bool:
    """The options that decide the statistics, as collect.json recorded them (device, backend and
    batch size change the last bits only, and a finished pass is reused across them anyway)."""
    from lcfast.model.hf import dtype_name, parse_dtype

    have = summary.get("options") or {}
    want = {"exact": bool(opts.exact), "covariance": bool(opts.covariance), "min_count": int(opts.min_count),
            "max_tokens": opts.max_tokens, "skip_nonfinite": bool(opts.skip_nonfinite),
            "dtype": dtype_name(parse_dtype(opts.dtype)), "layers": opts.layers.text if opts.layers else None,
            "classes": opts.classes.text if opts.classes else "all", "seed": int(opts.seed)}
    if opts.folds is not None:  # None: as many as fit (collect.json records the K it chose)
        want["folds"] = int(opts.folds)
    if any(have.get(k) != v for k, v in want.items()):
        return False
    return opts.context is None or summary.get("context") == int(opts.context)


def _newest_mtime(folder: Path) -> float:
    """The latest modification time of the files of a snapshot (links followed: the hub keeps the
    files in blobs/)."""
    newest = 0.0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                newest = max(newest, p.stat().st_mtime)
        except OSError:
            return float("inf")  # a dangling link: not a snapshot to trust
    return newest


def done_before(src, out_dir: Path, opts) -> dict | None:
    """The collect.json summary of revision `src` already collected into `out_dir` with `opts`
    (passes marked reused, `skipped` True; nothing is loaded or written), or None when it must go
    through the ordinary collection (not done, done otherwise, or anything unreadable)."""
    from lcfast.data.datadir import DataDir
    from lcfast.data.shards import TokenShard
    from lcfast.io import read_json

    if opts.restart or opts.part is not None or src.commit is None:
        return None
    path = Path(out_dir) / COLLECT_JSON
    try:
        if not path.is_file():
            return None
        s = read_json(path, "collect summary")
        if not isinstance(s, dict) or s.get("commit") != src.commit or s.get("model") != src.name:
            return None
        if (s.get("source") or {}).get("path") != str(src.path.resolve()) or not _options_match(s, opts):
            return None
        data = DataDir.check(src.data_dir)
        for split, shard in (("train", data.train), ("val", data.val)):
            rec = (s.get("shards") or {}).get(split) or {}
            if rec.get("path") != str(shard.resolve()) or \
                    rec.get("fingerprint") != str(TokenShard(str(shard)).fingerprint):
                return None
        files = s.get("files") or {}
        if "train" not in files or "val" not in files:
            return None
        for name in files.values():
            meta = read_state_meta(Path(out_dir) / name)
            if meta.get("windows_done") != meta.get("n_windows") or \
                    meta.get("model_fingerprint") != s.get("model_fingerprint"):
                return None
        if _newest_mtime(src.path) >= path.stat().st_mtime:
            return None
    except (DataError, OSError, ValueError):
        return None  # the ordinary path says what is wrong, or redoes it
    out = copy.deepcopy(s)
    for p in (out.get("passes") or {}).values():
        if isinstance(p, dict):
            p["reused"] = True
    out["skipped"] = True
    return out


__all__ = ["done_before"]
