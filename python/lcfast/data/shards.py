"""Token shards (`.lcshard`): validated, memory-mapped access plus batch windows.

The format is documented in docs/shard-format.md. Opening a shard validates it in Rust (magic,
version, header checksum, section sizes, truncation, payload checksum, every id < vocab_size,
document offsets, counts); `.tokens` and `.doc_offsets` are then plain zero-copy `numpy.memmap`
views of the documented layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lcfast.errors import DataError, UsageError

HEADER_SIZE = 128
SUFFIX = ".lcshard"


_WARM: list = []


def _core():
    """The Rust extension, with rust-numpy's NumPy API capsules fetched once, signals blocked.

    rust-numpy fetches them lazily on its first array call by importing a numpy module (Python
    code); an interrupt landing there would make it panic (`expect`) instead of raising
    KeyboardInterrupt. Blocked, the signal is delivered right after, in ordinary code."""
    try:
        from lcfast import _core
    except ImportError as e:  # pragma: no cover - broken install
        raise DataError(f"lcfast's Rust extension is not available ({e}); run 'maturin develop --release'") from e
    if not _WARM:
        import signal

        sigs = {signal.SIGINT, signal.SIGTERM}
        try:
            old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
        except (AttributeError, ValueError, OSError):  # not POSIX, or not the main thread
            old = None
        try:
            _core.top_k(np.zeros(1, dtype=np.int64), 1)  # array API + borrow-checking API
            _WARM.append(True)
        finally:
            if old is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return _core


class TokenShard:
    """A validated, memory-mapped token shard.

    Attributes: ``path`` (Path), ``vocab_size`` (int), ``n_tokens`` (int, also ``len()``),
    ``n_docs`` (int), ``dtype`` (``np.dtype('uint16')`` or ``np.dtype('uint32')``),
    ``eos_id`` (int or None), ``tokenizer_fingerprint`` (32 hex chars), ``fingerprint`` (16 hex
    chars identifying this shard's content), ``info`` (every header field, dict).

    ``verify=False`` skips the payload pass (checksum and id range) for trusted hot paths; the
    structural checks (header, sizes, offsets, counts total) always run.

    Raises `DataError` naming the file for a corrupt, truncated or foreign file, and
    `UsageError` for a missing path.
    """

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise UsageError(f"{self.path}: is a directory, not a shard file")
        self._shard = _core().Shard(str(self.path), verify)
        info = dict(self._shard.info())
        self.info = info
        self.vocab_size: int = info["vocab_size"]
        self.n_tokens: int = info["n_tokens"]
        self.n_docs: int = info["n_docs"]
        self.dtype = np.dtype("<u2") if info["token_bytes"] == 2 else np.dtype("<u4")
        self.eos_id: int | None = info["eos_id"]
        self.tokenizer_fingerprint: str = info["tokenizer_fingerprint"]
        self.fingerprint: str = info["fingerprint"]
        self._tokens: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n_tokens

    def __repr__(self) -> str:
        return (
            f"TokenShard({str(self.path)!r}, n_tokens={self.n_tokens}, n_docs={self.n_docs}, "
            f"vocab_size={self.vocab_size}, dtype={self.dtype.name})"
        )

    def _map(self, dtype: np.dtype, offset: int, count: int) -> np.ndarray:
        if count == 0:
            a = np.empty(0, dtype=dtype)
            a.flags.writeable = False
            return a
        return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=(count,))

    @property
    def tokens(self) -> np.ndarray:
        """All token ids, ``self.dtype`` [n_tokens]; a read-only zero-copy memmap."""
        if self._tokens is None:
            self._tokens = self._map(self.dtype, self.info["tokens_offset"], self.n_tokens)
        return self._tokens

    @property
    def doc_offsets(self) -> np.ndarray:
        """Document boundaries, np.uint64 [n_docs + 1]: document i is tokens[o[i]:o[i+1]]."""
        if self._offsets is None:
            self._offsets = self._map(np.dtype("<u8"), self.info["doc_offsets_offset"], self.n_docs + 1)
        return self._offsets

    def document(self, i: int) -> np.ndarray:
        """Token ids of document ``i`` (its trailing EOS included), ``self.dtype`` [len]."""
        if not 0 <= i < self.n_docs:
            raise UsageError(f"{self.path}: document index {i} out of range (n_docs {self.n_docs})")
        o = self.doc_offsets
        return self.tokens[int(o[i]) : int(o[i + 1])]

    def counts(self) -> np.ndarray:
        """Count of every token id as stored in the shard, np.int64 [vocab_size]."""
        return self._shard.counts()

    def recount(self) -> np.ndarray:
        """Count every id from the tokens again (parallel Rust histogram), np.int64 [vocab_size]."""
        return self._shard.histogram()

    def random_windows(self, batch: int, T: int, seed: int, step: int) -> np.ndarray:
        """Random training windows, np.int64 [batch, T+1]; use x = w[:, :-1], y = w[:, 1:].

        Window b of (seed, step) starts at a position drawn uniformly from [0, n_tokens − T − 1]
        by a hash of (seed, step, b): the same arguments always give the same batch.
        """
        _check_nonneg(batch=batch, T=T, seed=seed, step=step)
        return self._shard.random_windows(batch, T, seed, step)

    def n_seq_windows(self, T: int, rank: int = 0, world: int = 1) -> int:
        """Number of sequential windows of length T owned by ``rank`` of ``world``."""
        _check_nonneg(T=T, rank=rank, world=world)
        return self._shard.n_seq_windows(T, rank, world)

    def seq_windows(
        self, T: int, start: int, count: int, rank: int = 0, world: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic sequential windows ``start .. start+count`` of rank's block.

        Returns (windows np.int64 [count, T+1], valid np.int64 [count]). Global window k holds
        tokens [kT, kT+T]; its labels are positions kT+1 .. kT+valid−1, so every label position
        1..n_tokens−1 is covered exactly once over all windows and ranks. Padding is token 0.
        Rank r of ``world`` owns a contiguous, disjoint block of the windows.
        """
        _check_nonneg(T=T, start=start, count=count, rank=rank, world=world)
        return self._shard.seq_windows(T, start, count, rank, world)


def write_shard(
    path: str | os.PathLike,
    docs,
    vocab_size: int,
    eos_id: int | None = None,
    tokenizer_fingerprint: str | None = None,
) -> TokenShard:
    """Write documents (a list of 1-D integer arrays, ids < vocab_size) as a shard; returns it opened.

    The documents are stored as given (no EOS is appended). Written to a temporary file, fsynced
    and renamed into place. Meant for tests and small tools; corpora go through `tokenize_files`.
    """
    arrays = [np.asarray(d, dtype=np.int64).reshape(-1) for d in docs]
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    lengths = np.array([a.size for a in arrays], dtype=np.int64)
    _core().write_shard(str(path), int(vocab_size), flat, lengths, eos_id, tokenizer_fingerprint)
    return TokenShard(path)


def _check_nonneg(**kw: int) -> None:
    for k, v in kw.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise UsageError(f"{k} must be a non-negative integer, got {v!r}")


def expand_shard_paths(paths) -> list[Path]:
    """Shard paths from files and directories (a directory contributes its *.lcshard, sorted)."""
    if isinstance(paths, (str, os.PathLike, TokenShard)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        if isinstance(p, TokenShard):
            out.append(p.path)
            continue
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob(f"*{SUFFIX}"))
            if not found:
                raise UsageError(f"{p}: directory holds no {SUFFIX} files")
            out.extend(found)
        elif not p.exists():
            raise UsageError(f"{p}: no such shard file")
        else:
            out.append(p)
    if not out:
        raise UsageError("no shard given")
    return out
