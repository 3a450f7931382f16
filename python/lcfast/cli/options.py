"""Typed option factories for numeric flags: every numeric flag of every command is declared with
one of these, so its range (and finiteness) is checked by `lcfast.validate` while the command line
is parsed — before the command imports torch, opens a file or writes anything.

    batch_size: int = IntOption(32, "--batch-size", help="…", min=1)
    lr: float = FloatOption(1e-3, "--lr", help="…", min=0, min_open=True)
    seed: int = SeedOption(0, "--seed", help="…")

A bad value is a `UsageError` (exit 2, one line naming the flag). Memory-bound flags
(--batch-size, --width, …) are also checked against the machine by the command itself, once the
other inputs it depends on (vocabulary, context) are known; see `lcfast.validate.check_memory`.
"""

from __future__ import annotations

import typer

from lcfast import validate


def IntOption(default, *names: str, help: str, min: int | None = 1, max: int | None = validate.INT64_MAX,
              **kw):
    """An int option in [min, max] (default range: ≥ 1 and within int64)."""
    flag = names[0]

    def check(value):
        return None if value is None else validate.integer(flag, value, min=min, max=max)

    return typer.Option(default, *names, help=help, callback=check, **kw)


def FloatOption(default, *names: str, help: str, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False, **kw):
    """A finite float option in the given range (nan and ±inf refused)."""
    flag = names[0]

    def check(value):
        return None if value is None else validate.number(flag, value, min=min, max=max, min_open=min_open,
                                                          max_open=max_open)

    return typer.Option(default, *names, help=help, callback=check, **kw)


def SeedOption(default, *names: str, help: str, **kw):
    """A seed: an integer in [0, 2^64 − 1]."""
    flag = names[0]

    def check(value):
        return None if value is None else validate.seed(flag, value)

    return typer.Option(default, *names, help=help, callback=check, **kw)


__all__ = ["FloatOption", "IntOption", "SeedOption"]
