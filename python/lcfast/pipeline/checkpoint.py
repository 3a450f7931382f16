"""Atomic, weights-only persistence helpers (safetensors tensors + JSON), shared by train and collect.

Every write goes to a temporary file in the destination folder, is fsynced, then renamed over the
destination with os.replace, so a reader sees either the old or the new file, never half of one.
Folders (a training checkpoint) are built under a temporary name and renamed the same way.
Nothing here unpickles: tensors come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import torch

from lcfast.errors import DataError
from lcfast.faults import kill_point

MODEL_FORMAT = "lcfast-gptneo/1"


# -- atomic files ---------------------------------------------------------------------------------
def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically: temporary file in the same folder, fsync, os.replace, fsync
    of the folder. On any failure (disk full, permission, ...) the previous file is untouched, the
    temporary file is removed and a one-line DataError naming `path` is raised."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise DataError(f"{path}: cannot write ({_os_reason(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        kill_point(path.name)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DataError(f"{path}: cannot write ({_os_reason(e)}); the previous file, if any, is unchanged") from None
        raise
    fsync_dir(path.parent)


def _os_reason(e: OSError) -> str:
    """'No space left on device' etc.: the OS reason of an OSError without the path repeated."""
    return " ".join(str(e.strerror or e).split()) or type(e).__name__


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: corrupt {what} ({e})") from None


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an existing folder there
    is moved aside first and removed after), on error it is deleted and `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    except OSError as e:
        raise DataError(f"{path}: cannot write ({_os_reason(e)})") from None
    try:
        yield tmp
        for p in tmp.iterdir():
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(tmp)
        kill_point(path.name)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, DataError) and str(tmp) in str(e):  # a file inside: name the destination
            raise DataError(str(e).replace(str(tmp), str(path))) from None
        if isinstance(e, OSError):
            raise DataError(f"{path}: cannot write ({_os_reason(e)}); the previous version, if any, is unchanged") from None
        raise


# -- safetensors ----------------------------------------------------------------------------------
def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically write tensors (made contiguous, on CPU) with string metadata to a safetensors file.
    Non-string metadata values are stored as JSON."""
    from safetensors.torch import save

    meta = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata=meta))


def load_tensors(path: str | os.PathLike, what: str = "tensor file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on CPU, metadata) from a safetensors file; DataError naming the file if missing/corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
        raise DataError(f"{path}: corrupt {what} ({type(e).__name__}: {e})") from None
    return tensors, meta


# -- models ---------------------------------------------------------------------------------------
def save_model(path: str | os.PathLike, model, extra_metadata: dict | None = None) -> None:
    """model.safetensors for a lcfast GPTNeo: its state dict (tied head stored once) plus the model
    config and fingerprint in the header, so the file alone is enough to rebuild the model."""
    meta = {"format": MODEL_FORMAT, "config": model.config.to_dict(), "fingerprint": model.fingerprint()}
    meta.update(extra_metadata or {})
    save_tensors(path, dict(model.state_dict()), meta)


def load_model_file(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a lcfast GPTNeo from a model.safetensors written by save_model."""
    from lcfast.model.gptneo import GPTNeo, GPTNeoConfig

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
    if missing or unexpected:
        raise DataError(f"{source}: weights do not match the model config (missing {missing[:4]}, unexpected {unexpected[:4]})")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise DataError(f"{source}: tensor {k} has shape {tuple(tensors[k].shape)}, the config implies {tuple(v.shape)}")
    model.load_state_dict({k: t.to(torch.float32) for k, t in tensors.items()}, strict=True, assign=assign)


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
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
