"""A tokenized data folder (what `lcfast tokenize` writes): `DataDir` names its files once, checks
the folder where a command takes it (`--data`) and opens its shards; `token_decoder` reads its
tokenizer back.

A missing folder is a usage error (exit 2, like any missing path argument), a folder without the
shards a data error (exit 1), with the same words in every command that takes `--data`
(docs/bad-input.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lcfast.errors import DataError, UsageError

TRAIN_SHARD = "train.lcshard"
VAL_SHARD = "val.lcshard"
TOKENIZER = "tokenizer.json"
META = "meta.json"


@dataclass(frozen=True)
class DataDir:
    """The files of a tokenized data folder (none of them checked: see `check`)."""

    path: Path

    @property
    def train(self) -> Path:
        return self.path / TRAIN_SHARD

    @property
    def val(self) -> Path:
        return self.path / VAL_SHARD

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER

    @property
    def meta(self) -> Path:
        return self.path / META

    @classmethod
    def check(cls, path: str | os.PathLike, flag: str = "--data") -> DataDir:
        """The folder at `path`, with both shards: UsageError when there is no such folder,
        DataError when a shard is missing (a folder `lcfast tokenize` did not write)."""
        d = cls(Path(path))
        if not d.path.is_dir():
            raise UsageError(f"{flag} {d.path}: data folder not found (create one with 'lcfast tokenize')")
        for f in (d.train, d.val):
            if not f.is_file():
                raise DataError(f"{flag} {d.path}: {f.name} not found (create the folder with 'lcfast tokenize')")
        return d

    def open(self, flag: str = "--data"):
        """(train, val) TokenShards, refused (DataError) unless one tokenizer wrote both."""
        from lcfast.data.shards import TokenShard

        train, val = TokenShard(str(self.train)), TokenShard(str(self.val))
        if train.vocab_size != val.vocab_size or train.tokenizer_fingerprint != val.tokenizer_fingerprint:
            raise DataError(f"{flag} {self.path}: {TRAIN_SHARD} and {VAL_SHARD} were written with different tokenizers")
        return train, val


def token_decoder(tokenizer_path: str | Path | None):
    """decode(id) -> the token's text (byte-level BPE pieces decoded), or None without a tokenizer."""
    if not tokenizer_path or not Path(tokenizer_path).is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer_path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exceptions
        raise DataError(f"{tokenizer_path}: unreadable tokenizer ({' '.join(str(e).split())})") from None
    n = tok.get_vocab_size(with_added_tokens=True)

    def decode(i: int):
        return tok.decode([int(i)], skip_special_tokens=False) if 0 <= int(i) < n else None

    return decode
