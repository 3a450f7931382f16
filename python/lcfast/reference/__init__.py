"""The paper's own measurement tables, shipped with the package (see README.md in this folder).

`table_path("lc-2024_10_24")` is the packaged CSV; `resolve_table("paper:lc-2024_10_24")` turns the
`paper:NAME` form that `lcfast analyze` accepts into that path and leaves any other path alone.
"""

from __future__ import annotations

from pathlib import Path

from lcfast.errors import UsageError

__all__ = ["TABLES", "table_path", "resolve_table"]

_HERE = Path(__file__).resolve().parent

#: names of the packaged tables (file stems), oldest first
TABLES = tuple(sorted(p.stem for p in _HERE.glob("lc-*.csv")))


def table_path(name: str) -> Path:
    """Path of the packaged paper table `name` ("lc-2024_10_24", "2024_10_24" or "10_24")."""
    stem = name.removesuffix(".csv")
    for t in TABLES:
        if stem in (t, t.removeprefix("lc-"), t.removeprefix("lc-2024_")):
            return _HERE / f"{t}.csv"
    raise UsageError(f"paper:{name}: no such paper table (have: {', '.join(TABLES)})")


def resolve_table(arg: str | Path) -> Path:
    """`paper:NAME` → the packaged table's path; any other argument → Path(arg) unchanged."""
    s = str(arg)
    return table_path(s[len("paper:"):]) if s.startswith("paper:") else Path(arg)
