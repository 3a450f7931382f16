"""A tokenized data folder (what `lcfast tokenize` writes) and reading its tokenizer back."""

from __future__ import annotations

from pathlib import Path

from lcfast.errors import DataError


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
