"""Terminal tables that never cut a value, at any console width.

`print_table(console, title, headers, rows, keys=1)` prints one rich table when it fits the console;
otherwise a single-row table is turned on its side (one line per column), and a wider one is split
into several tables of the columns that fit, each repeating the first `keys` columns (the model
name, say) so every part reads on its own. Cells are never shortened: a value is either shown whole
or moved to the next part. Only columns listed in `fold` (free text, paths) may break over lines,
and only when they alone are wider than the console.
"""

from __future__ import annotations

from collections.abc import Sequence


def _table(title, headers, rows, cols, justify, fold, widths, *, wrap_all: bool = False):
    from rich.table import Table

    t = Table(title=title)
    for i in cols:
        if wrap_all or headers[i] in fold:
            t.add_column(headers[i], justify=justify.get(headers[i], "left"), overflow="fold")
        else:
            t.add_column(headers[i], justify=justify.get(headers[i], "left"), no_wrap=True, min_width=widths[i])
    for r in rows:
        t.add_row(*(r[i] for i in cols))
    return t


def _width(console, table) -> int:
    from rich.measure import Measurement

    # measured without the console's limit (Measurement.get clamps to it)
    return Measurement.get(console, console.options.update_width(1 << 20), table).maximum


def _balanced(parts, key_cols, widths, console, *table_args):
    """The same number of parts as the greedy split, with the columns spread evenly (contiguous
    runs minimising the widest part), when every such part fits; else the greedy parts."""
    k = len(parts)
    rest = [i for p in parts for i in p if i not in key_cols]
    if k < 2 or len(rest) < k:
        return parts
    w = [widths[i] + 3 for i in rest]
    best: dict = {}

    def split(start: int, n: int):  # (widest part, cut points) of rest[start:] in n runs
        if (start, n) in best:
            return best[start, n]
        if n == 1:
            r = (sum(w[start:]), [])
        else:
            r = None
            for cut in range(start + 1, len(rest) - n + 2):
                sub = split(cut, n - 1)
                cand = (max(sum(w[start:cut]), sub[0]), [cut] + sub[1])
                if r is None or cand[0] < r[0]:
                    r = cand
        best[start, n] = r
        return r

    cuts = [0] + split(0, k)[1] + [len(rest)]
    even = [list(key_cols) + rest[a:b] for a, b in zip(cuts, cuts[1:])]
    title, headers, rows, justify, fold, room = table_args
    if all(_width(console, _table(None, headers, rows, p, justify, fold, widths)) <= room for p in even):
        return even
    return parts


def fits(console, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> bool:
    """Whether `rows` under `headers` fit `console` as one table, every cell whole."""
    from rich.cells import cell_len

    headers = [str(h) for h in headers]
    rows = [[str(c) for c in r] for r in rows]
    widths = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return _width(console, _table(None, headers, rows, list(range(len(headers))), {}, set(), widths)) <= console.width


def print_table(
    console,
    title: str | None,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    keys: int = 1,
    justify: dict[str, str] | None = None,
    fold: Sequence[str] = (),
) -> None:
    """Print `rows` (one cell per header: a string, shown as is, or a `rich.text.Text`) under
    `headers` on `console` without cutting a cell.

    keys: how many leading columns identify a row (repeated in every part of a split table).
    justify: header → "left" | "right" | "center" (default left). fold: headers of free-text columns
    that may break over lines when they alone do not fit."""
    from rich.cells import cell_len as _len
    from rich.markup import escape
    from rich.text import Text

    def cell_len(c) -> int:
        return c.cell_len if isinstance(c, Text) else _len(c)

    headers = [str(h) for h in headers]
    rows = [[c if isinstance(c, Text) else Text(str(c)) for c in r] for r in rows]
    justify = dict(justify or {})
    fold = set(fold)
    widths = [max([cell_len(h)] + [cell_len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    room = console.width
    every = list(range(len(headers)))
    whole = _table(title, headers, rows, every, justify, fold, widths)
    if _width(console, whole) <= room:
        console.print(whole)
        return
    if len(rows) == 1:  # one record: one line per field
        side = _table(title, ["", "value"], [[Text(h), rows[0][i]] for i, h in enumerate(headers)], [0, 1],
                      {"value": "left" if fold else justify.get(headers[-1], "left")}, {"value"} if fold else set(),
                      [max(cell_len(h) for h in headers), max(cell_len(c) for c in rows[0])])
        if _width(console, side) <= room or fold:
            console.print(side)
            return
    keys = max(0, min(keys, len(headers) - 1))
    key_cols = every[:keys]
    parts: list[list[int]] = []
    cur = list(key_cols)
    for i in every[keys:]:
        trial = cur + [i]
        if len(cur) > keys and _width(console, _table(None, headers, rows, trial, justify, fold, widths)) > room:
            parts.append(cur)
            cur = key_cols + [i]
        else:
            cur = trial
    parts.append(cur)
    parts = _balanced(parts, key_cols, widths, console, title, headers, rows, justify, fold, room)
    if title and len(parts) > 1:  # the title once, above the parts (over a narrow part it would wrap)
        console.print(f"[bold]{escape(title)}[/] (in {len(parts)} parts)", highlight=False)
    for k, cols in enumerate(parts):
        name = f"({k + 1}/{len(parts)})" if len(parts) > 1 else title
        t = _table(name, headers, rows, cols, justify, fold, widths)
        if _width(console, t) > room:  # even the keys and one column do not fit: let text columns break
            t = _table(name, headers, rows, cols, justify, fold | {headers[i] for i in key_cols}, widths)
        console.print(t)


__all__ = ["fits", "print_table"]
