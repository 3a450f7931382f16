"""The local Hugging Face caches and the `[hf]` extra, shared by data/ (datasets, tokenizers) and
model/ (checkpoints): where the caches are (the rules of huggingface_hub / datasets, read from the
environment), `hf:ORG/NAME` to a snapshot folder of the hub cache (never a download), offline mode,
and `require`, which imports an optional dependency or fails with one line saying how to install it.
Imports neither transformers nor datasets."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from lcfast.errors import UsageError

#: the [hf] extra: what `pip install 'lcfast[hf]'` brings
HF_EXTRA = "pip install 'lcfast[hf]'"


def require(module: str, what: str):
    """Import an optional dependency of the [hf] extra, or raise a one-line UsageError."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UsageError(f"{what} needs the '{module}' package, which lcfast does not install by default: {HF_EXTRA}"
                         f" ({' '.join(str(e).split())})") from None


def hub_cache_dir() -> Path:
    """The hub cache: HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return _hf_home() / "hub"


def datasets_cache_dir() -> Path:
    """The datasets cache: HF_DATASETS_CACHE, else HF_HOME/datasets."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    return _hf_home() / "datasets"


def _hf_home() -> Path:
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface"


_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_snapshot(repo: str, kind: str = "model", flag: str = "MODEL") -> Path | None:
    """The snapshot folder of `repo` ("ORG/NAME", optionally "@REVISION") in the local hub cache, or
    None when the cache has no such repo. Revision: a ref (default "main") or a commit hash."""
    name, _, rev = repo.partition("@")
    if not _REPO_RE.match(name):
        raise UsageError(f"{flag} hf:{repo}: expected hf:ORG/NAME (a Hugging Face repo id)")
    root = hub_cache_dir() / f"{kind}s--{name.replace('/', '--')}"
    if not root.is_dir():
        return None
    rev = rev or "main"
    ref = root / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snap = root / "snapshots" / commit
    if snap.is_dir():
        return snap
    snaps = sorted(p for p in (root / "snapshots").glob("*") if p.is_dir()) if (root / "snapshots").is_dir() else []
    if not ref.is_file() and rev == "main" and len(snaps) == 1:
        return snaps[0]  # a cache written without refs (e.g. copied by hand): its only snapshot
    return None


@contextlib.contextmanager
def offline():
    """Hugging Face libraries in offline mode (environment and, when already imported, their
    constants), restored afterwards: nothing is fetched from the network."""
    import sys

    keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    old_env = {k: os.environ.get(k) for k in keys}
    patched = []
    for mod, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                      ("datasets.config", "HF_DATASETS_OFFLINE")):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, attr):
            patched.append((m, attr, getattr(m, attr)))
            setattr(m, attr, True)
    try:
        for k in keys:
            os.environ[k] = "1"
        yield
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for m, attr, v in patched:
            setattr(m, attr, v)
