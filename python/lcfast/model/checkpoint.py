"""Model persistence: a lcfast GPTNeo as one model.safetensors (weights + config in the header), and
opening a `lcfast train` run folder (config.json + checkpoints/epoch_K/) at one of its checkpoints.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from lcfast.errors import DataError, UsageError
from lcfast.io import load_tensors, read_json, save_tensors
from lcfast.model.gptneo import GPTNeo, GPTNeoConfig

MODEL_FORMAT = "lcfast-gptneo/1"
RUN_FORMAT = "lcfast-run/1"
EPOCH_PREFIX = "epoch_"


# -- model files ----------------------------------------------------------------------------------
def save_model(path: str | os.PathLike, model, extra_metadata: dict | None = None) -> None:
    """model.safetensors for a lcfast GPTNeo: its state dict (tied head stored once) plus the model
    config and fingerprint in the header, so the file alone is enough to rebuild the model."""
    meta = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "fingerprint": model.fingerprint()}
    meta.update(extra_metadata or {})
    save_tensors(path, dict(model.state_dict()), meta)


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a lcfast GPTNeo from a model.safetensors written by save_model."""
    tensors, meta = load_tensors(path, "model weights")
    if meta.get("format") != MODEL_FORMAT:
        raise DataError(f"{path}: not a lcfast model file (format {meta.get('format')!r}, expected {MODEL_FORMAT!r})")
    try:
        cfg_dict = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        raise DataError(f"{path}: model config missing from the safetensors header") from None
    cfg = GPTNeoConfig.from_dict(cfg_dict, source=str(path))
    with torch.device("meta"):
        model = GPTNeo(cfg)
    load_state_strict(model, tensors, str(path))
    return model.to(device).eval()


def load_state_strict(model, tensors: dict[str, torch.Tensor], source: str, assign: bool = True) -> None:
    """Load `tensors` into `model`: every parameter must be present with the right shape and nothing
    else may be there. assign=True (for a model built on the meta device) adopts the tensors;
    assign=False copies into the existing parameters (which an optimizer may already hold)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))

    def first(keys):
        return ", ".join(keys[:3]) + (", …" if len(keys) > 3 else "")

    if missing or unexpected:
        parts = ([f"{len(missing)} missing ({first(missing)})"] if missing else []) + \
                ([f"{len(unexpected)} unexpected ({first(unexpected)})"] if unexpected else [])
        raise DataError(f"{source}: weights do not match the model config: {'; '.join(parts)}")
    other = [k for k, v in expected.items() if tuple(tensors[k].shape) != tuple(v.shape)]
    if other:
        k = other[0]
        raise DataError(f"{source}: {len(other)} tensor{'s' * (len(other) != 1)} of another shape than the config "
                        f"implies ({k}: {tuple(tensors[k].shape)}, the config implies {tuple(expected[k].shape)}"
                        f"{', …' if len(other) > 1 else ''})")
    model.load_state_dict({k: t.to(torch.float32) for k, t in tensors.items()}, strict=True, assign=assign)


# -- run folders ----------------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> dict[int, Path]:
    """Finished checkpoints of a run: epoch -> folder (a folder counts once its state.json exists)."""
    root = Path(run_dir) / "checkpoints"
    out: dict[int, Path] = {}
    if root.is_dir():
        for p in root.iterdir():
            if (p.name.startswith(EPOCH_PREFIX) and p.name[len(EPOCH_PREFIX):].isdigit()
                    and (p / "state.json").is_file()):
                out[int(p.name[len(EPOCH_PREFIX):])] = p
    return dict(sorted(out.items()))


def load_run(run_dir: str | os.PathLike, checkpoint: str | int | None = "last", device: str | torch.device = "cpu"):
    """(model in eval mode, run config) for a run folder written by `lcfast train`. `checkpoint`: "last"
    or an epoch number. The run config is config.json plus "checkpoint": {epoch, path, metrics of that epoch}."""
    run = Path(run_dir)
    cfg = read_json(run / "config.json", "run config")
    if cfg.get("format") != RUN_FORMAT:
        raise DataError(f"{run / 'config.json'}: not a lcfast run config (format {cfg.get('format')!r})")
    cks = list_checkpoints(run)
    if not cks:
        raise DataError(f"{run}: no finished checkpoint yet (train it with 'lcfast train ... --out {run}')")
    if checkpoint in ("last", None):
        epoch = max(cks)
    else:
        try:
            epoch = int(checkpoint)
        except (TypeError, ValueError):
            raise UsageError(f"checkpoint must be 'last' or an epoch number, got {checkpoint!r}") from None
        if epoch not in cks:
            raise DataError(f"{run}: no checkpoint for epoch {epoch} (have {sorted(cks)})")
    path = cks[epoch]
    model = load_model_file(path / "model.safetensors", device)
    if model.config.to_dict() != cfg.get("model"):
        raise DataError(f"{path / 'model.safetensors'}: model config differs from {run / 'config.json'}")
    state = read_json(path / "state.json", "checkpoint state")
    metrics = next((r for r in state.get("history", []) if r.get("epoch") == epoch), None)
    return model, {**cfg, "checkpoint": {"epoch": epoch, "path": str(path), "metrics": metrics}}


__all__ = ["MODEL_FORMAT", "RUN_FORMAT", "EPOCH_PREFIX", "save_model", "load_model_file", "load_state_strict",
           "list_checkpoints", "load_run"]
