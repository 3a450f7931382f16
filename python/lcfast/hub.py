"""The local Hugging Face caches and the `[hf]` extra, shared by data/ (datasets, tokenizers) and
model/ (checkpoints): where the caches are (the rules of huggingface_hub / datasets, read from the
environment), `hf:ORG/NAME` to a snapshot folder of the hub cache (never a download), offline mode,
and `require`, which imports an optional dependency or fails with one line saying how to install it.
Imports neither transformers nor datasets."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lcfast.errors import DataError, UsageError

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
    None when the cache has no such repo. Revision: a branch or tag (a ref, default "main"), a
    commit hash or a unique prefix of one (`resolve_revision`); one the cache does not hold is a
    DataError naming those it does."""
    name, _, rev = repo.partition("@")
    found = resolve_revision(name, rev or None, kind, flag)
    return found.path if found is not None else None


# --------------------------------------------------------------------------------------------
# revisions of a cached repo (a training history: Pythia's step0 … step143000)
#
# The layout huggingface_hub writes (read here directly: lcfast does not depend on huggingface_hub):
#   <cache>/<kind>s--ORG--NAME/refs/<ref>          a commit hash (one per branch or tag fetched;
#                                                  refs/pr/1 for pull requests)
#   <cache>/<kind>s--ORG--NAME/snapshots/<commit>/ the files of that commit (links into blobs/)

_STEP_RE = re.compile(r"^step(\d+)$")
_HEX_RE = re.compile(r"^[0-9a-f]{4,40}$")
#: a revision named on the command line: refs/… paths allowed, nothing that climbs out of refs/
_REV_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


@dataclass(frozen=True)
class CachedRevision:
    """One revision of a repo in the local hub cache: `name` (a ref, or the commit hash when no ref
    names it), `commit` (40 hex digits, as the snapshot folder is named), `path` (the snapshot
    folder) and `refs` (every ref of the cache that points to this commit, sorted)."""

    name: str
    commit: str
    path: Path
    refs: tuple[str, ...] = ()

    @property
    def step(self) -> int | None:
        """N of a `stepN` revision (Pythia's training steps), else None."""
        return parse_step(self.name)


def parse_step(revision: str | None) -> int | None:
    """N of a revision named `stepN` (step0, step1000, …), else None."""
    m = _STEP_RE.match(str(revision or ""))
    return int(m.group(1)) if m else None


def hub_repo_dir(repo: str, kind: str = "model", flag: str = "MODEL") -> Path:
    """<cache>/<kind>s--ORG--NAME for "ORG/NAME" (UsageError for a malformed repo id)."""
    if not _REPO_RE.match(repo):
        raise UsageError(f"{flag} hf:{repo}: expected hf:ORG/NAME (a Hugging Face repo id)")
    return hub_cache_dir() / f"{kind}s--{repo.replace('/', '--')}"


def _revision_order(r: CachedRevision) -> tuple:
    """stepN by N first (a training history in order), then other refs by name, then bare commits."""
    s = r.step
    if s is not None:
        return (0, s, r.name)
    return (1 if r.refs else 2, 0, r.name)


def cached_revisions(repo: str, kind: str = "model", flag: str = "MODEL") -> list[CachedRevision]:
    """Every revision of `repo` the local hub cache holds a snapshot of, one per commit, in
    `_revision_order`: a commit is named by a `stepN` ref if one points to it, else by its first
    other ref (`main` last), else by its hash. [] when the repo is not cached. Never touches the
    network (the cache's folders only)."""
    root = hub_repo_dir(repo, kind, flag)
    snaps = root / "snapshots"
    if not snaps.is_dir():
        return []
    commits = {p.name: p for p in snaps.iterdir() if p.is_dir()}
    refs: dict[str, list[str]] = {}
    ref_root = root / "refs"
    if ref_root.is_dir():
        for f in sorted(ref_root.rglob("*")):
            if not f.is_file():
                continue
            try:
                commit = f.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                continue  # an unreadable ref names nothing; the snapshot stays listed by its hash
            if commit in commits:
                refs.setdefault(commit, []).append(f.relative_to(ref_root).as_posix())
    out = []
    for commit, path in commits.items():
        names = sorted(refs.get(commit, []), key=lambda n: (parse_step(n) is None, n == "main", n))
        out.append(CachedRevision(names[0] if names else commit, commit, path, tuple(sorted(names))))
    return sorted(out, key=_revision_order)


def describe_revisions(revs: list[CachedRevision], near: str | None = None, limit: int = 12) -> str:
    """The cached revisions for a one-line message: every name up to `limit`, else the first and
    last few and the count; with `near` a stepN, the cached steps on either side of it."""
    names = [r.name for r in revs]
    if not names:
        return "none"
    text = ", ".join(names) if len(names) <= limit else \
        f"{', '.join(names[:limit - 4])}, …, {', '.join(names[-3:])} ({len(names)} in all)"
    want = parse_step(near)
    steps = sorted(r.step for r in revs if r.step is not None)
    if want is not None and steps and len(names) > limit:
        below = [s for s in steps if s < want]
        above = [s for s in steps if s > want]
        nearest = [f"step{s}" for s in (below[-1:] + above[:1])]
        text += f"; nearest: {', '.join(nearest)}"
    return text


def resolve_revision(repo: str, rev: str | None = None, kind: str = "model",
                     flag: str = "MODEL") -> CachedRevision | None:
    """The cached revision `rev` of `repo`: a ref (branch, tag, refs/pr/N), a full commit hash, or
    an unambiguous prefix (≥ 4 hex digits) of one (a commit keeps the name of the ref that points to
it, a stepN first); None (the default "main") → refs/main, or the
    only snapshot of a cache written without refs. Returns None when the cache has no such repo;
    raises DataError (one line, naming the cached revisions) when it has the repo but not that
    revision, UsageError for a malformed or ambiguous one."""
    root = hub_repo_dir(repo, kind, flag)
    if not root.is_dir():
        return None
    if rev is not None and (not _REV_RE.match(rev) or any(p in (".", "..") for p in rev.split("/"))):
        raise UsageError(f"{flag} hf:{repo}@{rev}: not a revision name (a branch, tag or commit hash)")
    revs = cached_revisions(repo, kind, flag)
    want = rev or "main"
    by_ref = {ref: r for r in revs for ref in r.refs}
    if want in by_ref:
        return _named(by_ref[want], want)
    by_commit = {r.commit: r for r in revs}
    if want in by_commit:
        return by_commit[want]  # under its own name: step1000 when a stepN ref points to it
    if want == "main" and not (root / "refs" / "main").is_file() and len(revs) == 1:
        return revs[0]  # a cache written without refs (e.g. copied by hand): its only snapshot
    if _HEX_RE.match(want):
        hits = [r for r in revs if r.commit.startswith(want)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise UsageError(f"{flag} hf:{repo}@{want}: ambiguous: the prefix of {len(hits)} cached commits "
                             f"({', '.join(r.commit[:12] for r in hits[:6])}); give more digits")
    spec = f"hf:{repo}@{rev}" if rev else f"hf:{repo}"
    what = f"no revision {want}" if rev else "no 'main' revision"
    fetch = f"huggingface-cli download {repo}" + (f" --revision {rev}" if rev else "")
    raise DataError(f"{flag} {spec}: {what} in the local Hugging Face cache {root} (cached: "
                    f"{describe_revisions(revs, want)}); lcfast never downloads: fetch it first, e.g. '{fetch}'"
                    + ("" if rev else ", or name one: hf:ORG/NAME@REV"))


def _named(r: CachedRevision, name: str) -> CachedRevision:
    """`r` under the name it was asked by (a commit that is both step143000 and main, asked as main)."""
    return r if r.name == name else CachedRevision(name, r.commit, r.path, r.refs)


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
