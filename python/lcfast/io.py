"""Atomic, weights-only persistence helpers (safetensors tensors + JSON): the bottom layer shared by
model, train, collect and the reports.

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
        raise DataError(f"{path}: cannot write ({os_reason(e)})") from None
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
            raise DataError(f"{path}: cannot write ({os_reason(e)}); the previous file, if any, is unchanged") from None
        raise
    fsync_dir(path.parent)


def os_reason(e: OSError) -> str:
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
        raise DataError(f"{path}: cannot write ({os_reason(e)})") from None
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
            raise DataError(f"{path}: cannot write ({os_reason(e)}); the previous version, if any, is unchanged") from None
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
