"""Lazy re-exports for package `__init__` files (PEP 562): a public name is imported from its
submodule on first use, so importing a package costs nothing until one is used (torch, triton)."""

from __future__ import annotations

import importlib


def lazy_getattr(package: str, table: dict[str, str]):
    """A module `__getattr__` for `package` that resolves the names of `table` (name → module path)."""

    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
