"""A training run's resume state (`lcfast train`): per epoch, the checkpoint folder
checkpoints/epoch_K/ (model.safetensors, state.json and, for the latest checkpoint only,
state.safetensors with the AdamW moments and the RNG states) and metrics.jsonl; written by rank 0
atomically, restored bit for bit on resume (lcfast.pipeline.train)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from lcfast import dist
from lcfast.errors import DataError
from lcfast.io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    read_json,
    save_tensors,
)
from lcfast.model.checkpoint import (
    EPOCH_PREFIX,
    list_checkpoints,
    load_state_strict,
    save_model,
)
from lcfast.model.gptneo import GPTNeo


# -- optimizer and RNG state ----------------------------------------------------------------------
def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (safetensors) and a JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt.{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if not name.startswith("opt."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_to_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def rng_from_tensors(tensors: dict[str, torch.Tensor]) -> None:
    if "rng.cpu" in tensors:
        torch.set_rng_state(tensors["rng.cpu"])
    cuda = [tensors[k]
            for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# -- checkpoints ----------------------------------------------------------------------------------
def save_checkpoint(out: Path, model: GPTNeo, opt, epoch: int, step: int, history: list[dict], elapsed: float) -> None:
    """Write checkpoints/epoch_K atomically, then metrics.jsonl; older checkpoints drop their
    optimizer state (only the latest is needed to resume)."""
    final = out / "checkpoints" / f"{EPOCH_PREFIX}{epoch}"
    with atomic_dir(final) as tmp:
        save_model(tmp / "model.safetensors", model, {"epoch": str(epoch), "step": str(step)})
        opt_tensors, opt_meta = optimizer_to_tensors(opt)
        save_tensors(tmp / "state.safetensors", {**opt_tensors, **rng_to_tensors()},
                          {"optimizer": opt_meta, "step": str(step), "epoch": str(epoch)})
        atomic_write_json(tmp / "state.json", {
            "epoch": epoch, "step": step, "elapsed": elapsed, "history": history,
            "model_fingerprint": model.fingerprint(),
        })
    write_metrics(out, history)
    for e, p in list_checkpoints(out).items():  # optimizer state is only needed to resume: keep the latest
        if e < epoch and (p / "state.safetensors").exists():
            (p / "state.safetensors").unlink()


def write_metrics(out: Path, history: list[dict]) -> None:
    """metrics.jsonl: one line per finished epoch (rewritten only when it changed)."""
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in history)
    p = out / "metrics.jsonl"
    if not (p.is_file() and p.read_text(encoding="utf-8") == text):
        atomic_write_text(p, text)


def load_resume_state(out: Path, model: GPTNeo, opt) -> tuple[int, int, list[dict], float]:
    """Restore the latest checkpoint with optimizer state; (epoch, step, history, elapsed)."""
    root = out / "checkpoints"
    if root.is_dir() and dist.is_main():  # leftovers of a checkpoint write killed before its rename
        for junk in sorted(root.glob(f".{EPOCH_PREFIX}*")):
            final = root / junk.name[1:-len(".old")] if junk.name.endswith(".old") else None
            if final is not None and not final.exists() and junk.is_dir():
                os.replace(junk, final)  # killed between moving the old version aside and the new in
                continue
            shutil.rmtree(junk, ignore_errors=True) if junk.is_dir() else junk.unlink(missing_ok=True)
    dist.barrier("the barrier after rank 0 cleaned the checkpoints folder")
    cks = [(e, p) for e, p in list_checkpoints(out).items() if (p / "state.safetensors").is_file()]
    if not cks:
        return 0, 0, [], 0.0
    epoch, p = cks[-1]
    state = read_json(p / "state.json", "checkpoint state")
    tensors, _ = load_tensors(p / "model.safetensors", "model weights")
    load_state_strict(model, tensors, str(p / "model.safetensors"), assign=False)
    st, meta = load_tensors(p / "state.safetensors", "optimizer state")
    try:
        optimizer_from_tensors(opt, st, json.loads(meta["optimizer"]))
    except (KeyError, ValueError, RuntimeError) as e:
        raise DataError(f"{p / 'state.safetensors'}: optimizer state does not fit the model ({e})") from None
    rng_from_tensors(st)
    return int(state["epoch"]), int(state["step"]), list(state.get("history", [])), float(state.get("elapsed", 0.0))


__all__ = ["save_checkpoint", "write_metrics", "load_resume_state", "optimizer_to_tensors", "optimizer_from_tensors",
           "rng_to_tensors", "rng_from_tensors"]
