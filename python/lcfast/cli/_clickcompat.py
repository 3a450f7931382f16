"""Click's exception classes, wherever this Typer keeps them.

Typer ≥ 0.25 vendors click as `typer._click` (with Exit/Abort in `typer.exceptions`); older Typer
uses the `click` package. Catching both keeps the one-line error contract on every Typer the
project meets (the GPU image pins its own).
"""

from __future__ import annotations


def _collect(name: str) -> tuple[type, ...]:
    found: list[type] = []
    for modname in ("typer.exceptions", "typer._click.exceptions", "click.exceptions"):
        try:
            mod = __import__(modname, fromlist=[name])
        except ImportError:
            continue
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


Exit = _collect("Exit")
Abort = _collect("Abort")
UsageError = _collect("UsageError")
ClickException = _collect("ClickException")
