"""The one persistence layer: atomic files and folders, JSON, safetensors tensors + metadata.

Every lcfast output goes through here, so the rules of docs/bad-input.md ("nothing a user had is
lost") live in one place:

* A file is written to a temporary file in its destination folder, fsynced, and renamed over the
  destination with os.replace only once it is complete; a reader sees the old or the new file,
  never half of one. Several files that belong together (a tokenizer with its shards, the outputs of
  an analysis) are staged together and published together, after all of them are complete
  (`staged()`). Folders (a training checkpoint) are built under a temporary name and renamed.
* On any failure, interrupt included, the temporaries are removed and the previous file is
  untouched; an OSError becomes a one-line DataError naming the destination.
* A run killed with SIGKILL leaves its temporaries behind. They are named
  ``.<name>.lc<pid>-<host>.<random>.tmp`` so that the next write into the same folder can tell a
  dead process's leftovers from a live writer's (another process, another host on a shared
  filesystem) and remove them (`sweep_temporaries`).
* New files get the mode a plain ``open(path, "w")`` would give (0o666 minus the umask), or the
  mode of the file they replace; temporary files are private until then.

Nothing here unpickles: tensors come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from lcfast.errors import DataError, UsageError
from lcfast.faults import kill_point

__all__ = [
    "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_dir", "staged", "Staging",
    "sweep_temporaries", "temp_path", "read_json", "os_reason", "make_dir", "fsync_dir", "refuse_overwriting_inputs",
    "save_tensors", "load_tensors", "read_tensor_meta", "meta_mismatch", "check_meta",
]


# -- names and modes of temporaries ---------------------------------------------------------------
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


_HOST = _host_tag()
# .<name>.lc<pid>-<host>.<random>.tmp  (files and folders written here)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.lc(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.[0-9a-z]+\.tmp$")
# what the Rust shard writer adds to a path it writes: .<path name>.tmp.<pid> / .offsets.tmp.<pid>
_RUST_RE = re.compile(r"^\.(?P<inner>.+?\.tmp)\.(?:offsets\.)?tmp\.(?P<pid>\d+)$")


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside `path` (nothing is created)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lc{os.getpid()}-{_HOST}.{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def _stale(name: str) -> str | None:
    """The destination name a dead process's temporary `name` was for, or None when `name` is not an
    lcfast temporary or its writer may still be alive (another host, a live pid)."""
    m = _RUST_RE.match(name)
    if m is not None:
        inner = _TEMP_RE.match(m.group("inner"))
        if inner is None or inner.group("host") != _HOST or _pid_alive(int(m.group("pid"))):
            return None
        return inner.group("name")
    m = _TEMP_RE.match(name)
    if m is None or m.group("host") != _HOST or _pid_alive(int(m.group("pid"))):
        return None
    return m.group("name")


def sweep_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove what killed lcfast processes left in `folder` (temporaries of dead writers on this
    host; only those for destination `name` when given). Returns the removed paths."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith("."):
            continue
        if name is not None and not (e.name.startswith(f".{name}.") or e.name.startswith(f"..{name}.")):
            continue
        if _stale(e.name) is None:
            continue
        p = Path(e.path)
        with contextlib.suppress(OSError):
            if e.is_dir(follow_symlinks=False):
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    m = os.umask(0o022)
    os.umask(m)
    return m


def _final_mode(path: Path, directory: bool = False) -> int:
    """Mode for a new file (or folder) at `path`: the replaced one's, else what open()/mkdir() give."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for the few renames that publish outputs, so an interrupt never
    lands between two of them; it is delivered (and raised) right after."""
    import signal

    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    except (AttributeError, ValueError, OSError):  # not POSIX
        old = None
    try:
        yield
    finally:
        if old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


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


def os_reason(e: OSError) -> str:
    """'No space left on device' etc.: the OS reason of an OSError without the path repeated."""
    return " ".join(str(e.strerror or e).split()) or type(e).__name__


def make_dir(path: str | os.PathLike, what: str = "the folder", flag: str = "--out") -> Path:
    """Create the output folder `path` (and its parents): UsageError when a file is in the way,
    DataError naming `flag`, `what` and the OS reason when it cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path}: exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{flag} {path}: cannot create {what} ({os_reason(e)})") from None
    return path


def _cannot_write(path: Path, e: OSError, what: str = "file") -> DataError:
    return DataError(f"{path}: cannot write ({os_reason(e)}); the previous {what}, if any, is unchanged")


class Staging:
    """Output files published together: each is written to its own temporary file first; `commit()`
    fsyncs them, sets their final mode and renames them into place one after the other (after all of
    them are complete); `discard()` removes the temporaries. Use through `staged()`."""

    def __init__(self) -> None:
        self._items: list[tuple[Path, Path]] = []  # (temporary, destination)
        self._swept: set[Path] = set()
        self._made: list[Path] = []  # folders this staging created, outermost first
        self.committed = False

    def make_dirs(self, folder: str | os.PathLike) -> Path:
        """Create `folder` and its missing parents (OSError as raised). Those it created are removed
        again, when empty, if nothing is published: an output folder exists only with outputs in it."""
        folder = Path(folder)
        missing = []
        p = folder
        while not os.path.lexists(p) and p.parent != p:
            missing.append(p)
            p = p.parent
        self._made.extend(reversed(missing))  # before mkdir: a failure halfway leaves the first ones
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def path(self, dest: str | os.PathLike) -> Path:
        """A temporary path for `dest` that some other writer fills (e.g. the Rust shard writer);
        its parent folder is created. The file must exist at commit time."""
        dest = Path(dest)
        if any(d == dest for _, d in self._items):
            raise ValueError(f"{dest}: staged twice")
        try:
            self.make_dirs(dest.parent)
        except OSError as e:
            raise _cannot_write(dest, e) from None
        if dest.parent not in self._swept:  # what killed writers left here (dead pids on this host only)
            sweep_temporaries(dest.parent)
            self._swept.add(dest.parent)
        tmp = temp_path(dest)
        self._items.append((tmp, dest))
        return tmp

    @contextlib.contextmanager
    def open(self, dest: str | os.PathLike, mode: str = "wb", **kw) -> Iterator[IO]:
        """A file object writing `dest`'s temporary (binary unless mode has no "b")."""
        dest = Path(dest)
        tmp = self.path(dest)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise _cannot_write(dest, e) from None
        try:
            with os.fdopen(fd, mode, **kw) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise _cannot_write(dest, e) from None

    def write_bytes(self, dest: str | os.PathLike, data: bytes) -> None:
        with self.open(dest, "wb") as f:
            f.write(data)

    def write_text(self, dest: str | os.PathLike, text: str) -> None:
        self.write_bytes(dest, text.encode("utf-8"))

    def write_json(self, dest: str | os.PathLike, obj, sort_keys: bool = True) -> None:
        self.write_text(dest, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")

    def forget(self, dest: str | os.PathLike) -> None:
        """Drop `dest` from the set (its temporary, if written, is removed)."""
        dest = Path(dest)
        for item in [it for it in self._items if it[1] == dest]:
            self._items.remove(item)
            with contextlib.suppress(OSError):
                os.unlink(item[0])

    def commit(self) -> None:
        dirs: dict[Path, None] = {}
        for tmp, dest in self._items:
            try:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.chmod(tmp, _final_mode(dest))
            except OSError as e:
                raise _cannot_write(dest, e) from None
        with _signals_deferred():
            for tmp, dest in self._items:
                kill_point(dest.name)  # crash-safety tests: LCFAST_TEST_KILL_AT (inert otherwise)
                try:
                    os.replace(tmp, dest)
                except OSError as e:
                    raise _cannot_write(dest, e) from None
                dirs[dest.parent] = None
            self.committed = True
        for d in dirs:
            fsync_dir(d)

    def discard(self) -> None:
        for tmp, _ in self._items:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for d in reversed(self._made):  # innermost first; a folder something else wrote into stays
            with contextlib.suppress(OSError):
                os.rmdir(d)


@contextlib.contextmanager
def staged() -> Iterator[Staging]:
    """Stage several output files and publish them together when the block ends without an error;
    on an error or interrupt nothing is published and the temporaries are removed."""
    st = Staging()
    try:
        yield st
        st.commit()
    finally:
        if not st.committed:
            st.discard()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file in the same folder, fsync, os.replace, fsync
    of the folder; parent folders are created). On any failure (disk full, permission, interrupt)
    the previous file is untouched, the temporary file is removed, and an OSError becomes a
    one-line DataError naming `path`."""
    with staged() as st:
        st.write_bytes(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, sort_keys: bool = True) -> None:
    """`atomic_write_bytes` of indented JSON (+ newline)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON file's content; DataError naming the file when it is missing or corrupt."""
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
    is moved aside to ``.<name>.old`` first and removed after), on error or interrupt it is deleted
    and `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_temporaries(path.parent)
        tmp = temp_path(path)
        os.mkdir(tmp, 0o700)
    except OSError as e:
        raise _cannot_write(path, e, "version") from None
    try:
        yield tmp
        for p in tmp.iterdir():
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(tmp)
        os.chmod(tmp, _final_mode(path, directory=True))
        kill_point(path.name)
        with _signals_deferred():
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
            raise _cannot_write(path, e, "version") from None
        raise


def refuse_overwriting_inputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike],
                              flag: str = "--out") -> None:
    """UsageError when an output path is one of the input files (inputs are never outputs)."""
    ins = []
    for p in inputs:
        with contextlib.suppress(OSError):
            if Path(p).is_file():
                ins.append((Path(p), os.stat(p)))
    for out in outputs:
        out = Path(out)
        try:
            so = os.stat(out)
        except OSError:
            continue
        for p, si in ins:
            if (so.st_dev, so.st_ino) == (si.st_dev, si.st_ino):
                raise UsageError(f"{flag}: writing {out} would overwrite the input {p}; choose another {flag}")


# -- safetensors ----------------------------------------------------------------------------------
def save_tensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict | None = None) -> None:
    """Atomically write tensors (made contiguous, on CPU) with string metadata to a safetensors file.
    Non-string metadata values are stored as JSON."""
    from safetensors.torch import save

    meta = {str(k): v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(flat, metadata=meta))


def _unreadable(path: Path, what: str, e: Exception, hint: str) -> DataError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return DataError(f"{path}: unreadable {what} ({type(e).__name__}{': ' + first if first else ''}){hint}")


def load_tensors(path: str | os.PathLike, what: str = "tensor file", hint: str = ""):
    """(tensors on CPU, metadata dict of strings) of a safetensors file; a DataError naming the file
    (`what` says what it should be, `hint` how to recover) when it is missing or unreadable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
        raise _unreadable(path, what, e, hint) from None
    return tensors, meta


def read_tensor_meta(path: str | os.PathLike, what: str = "tensor file", hint: str = "") -> dict[str, str]:
    """The metadata dict of a safetensors file (header only); errors as `load_tensors`."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001 - any unreadable header
        raise _unreadable(path, what, e, hint) from None


_KEY_WORDS = {"model_fingerprint": "another model", "shard_fingerprint": "another shard",
              "means_fingerprint": "other class means", "pass": "another pass"}


def _meta_str(v) -> str | None:
    return v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True)


def meta_mismatch(meta: dict, want: dict) -> tuple[str, str, str | None, str | None] | None:
    """The first key (sorted as `want` is) where string metadata `meta` differs from `want`
    (non-string values compared as JSON; a None in `want` requires the key to be absent):
    (key, what it means, have, want), else None."""
    for key, val in want.items():
        have, w = _meta_str(meta.get(key)), _meta_str(val)
        if have != w:
            return key, _KEY_WORDS.get(key, f"another {key}"), have, w
    return None


def check_meta(path: str | os.PathLike, meta: dict, want: dict | None, hint: str = "") -> None:
    """DataError naming `path` when its metadata does not match `want`, e.g.
    `…: state was written for another model (model_fingerprint 'a', now 'b')` + `hint`."""
    bad = meta_mismatch(meta, want or {})
    if bad is not None:
        key, what, have, w = bad
        shown = lambda v: "none" if v is None else repr(v)  # noqa: E731 - None: the key is absent
        raise DataError(f"{path}: state was written for {what} ({key} {shown(have)}, now {shown(w)}){hint}")
