"""What lets a rerun reuse a finished step: stamps (the settings a step's output was made with), file
hashes, and the tests for a finished training run and a finished collection."""

from __future__ import annotations

import json
from pathlib import Path

from lcfast.pipeline.train_config import TrainConfig


def stamp_ok(path: Path, want: dict) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")) == want
    except (OSError, ValueError):
        return False


def write_stamp(path: Path, obj: dict) -> None:
    from lcfast.io import atomic_write_json

    atomic_write_json(path, obj)


def file_sha(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def finished_run(run: Path, hp: TrainConfig) -> dict | None:
    """The last epoch's metrics of a finished run trained with these settings, else None (then
    train_run trains, resumes, or explains what differs)."""
    from lcfast.pipeline.train import is_complete

    if not is_complete(run):
        return None
    cfg = read_json(run / "config.json")
    model, train = cfg.get("model", {}), cfg.get("train", {})
    same = (model.get("layers"), model.get("width"), train.get("epochs"), train.get("batch_size"), train.get("context"),
            train.get("lr"), train.get("seed"), train.get("steps_per_epoch")) == (
        hp.layers, hp.width, hp.epochs, hp.batch_size, hp.context, hp.lr, hp.seed, hp.steps_per_epoch)
    lines = ((run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
             if (run / "metrics.jsonl").is_file() else [])
    if not same or not lines:
        return None
    return {**json.loads(lines[-1]), "already_complete": True}


def collected(run: Path, checkpoint: str) -> bool:
    """Whether every checkpoint that `collect RUN --checkpoint checkpoint` covers has its collect.json."""
    epochs = epochs_of(run)
    want = epochs if checkpoint == "all" else epochs[-1:]
    return bool(want) and all((run / "collect" / f"epoch_{e}" / "collect.json").is_file() for e in want)


def epochs_of(run: Path) -> list[int]:
    """The epochs of a run's saved checkpoints, in order."""
    from lcfast.model.checkpoint import list_checkpoints

    return sorted(list_checkpoints(run))


def read_json(path: Path) -> dict:
    """The JSON object in `path`; {} when it is missing, unreadable or not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
