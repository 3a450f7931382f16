"""The one progress-bar factory of lcfast (tokenize, corpus synth, train, collect, measure, bench, demo).

    with progress_bar(unit="windows", fields=("tps",)) as bar:
        task = bar.add_task("L1_W32_E1_S0 train", total=n, tps="")
        bar.update(task, completed=k, tps="12,345 tok/s")

Every bar has the same shape and fits an 80-column terminal (the bar narrows, no text wraps): a bold
label (the task description), a bar, the count ("123/456 windows", or bytes for `bytes_=True`), the
caller's fields, the time spent and an estimate of the time left ("0:42 eta 1:23"; no estimate until
rich has a speed). The
returned object is a `rich.progress.Progress`; its tasks, `update`, `advance` and `console` work as
rich documents them.
"""

from __future__ import annotations

from collections.abc import Sequence

#: widest the bar gets (it narrows to fit the other columns in the console)
BAR_WIDTH = 24


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _time_column():
    from rich.progress import ProgressColumn
    from rich.table import Column
    from rich.text import Text

    class TimeColumn(ProgressColumn):
        """`1:05 eta 3:19`: time spent, and the estimate of the time left while a task runs and rich
        has a speed estimate (blank before)."""

        max_refresh = 0.5

        def __init__(self):
            super().__init__(table_column=Column(no_wrap=True))

        def render(self, task):
            spent = _clock(task.finished_time if task.finished else (task.elapsed or 0.0))
            left = task.time_remaining
            if task.finished or left is None or task.total is None:
                return Text(spent, style="progress.elapsed")
            return Text(f"{spent} eta {_clock(left)}", style="progress.remaining")

    return TimeColumn()


def _count_column(unit: str):
    from rich.progress import ProgressColumn
    from rich.table import Column
    from rich.text import Text

    class CountColumn(ProgressColumn):
        """`done/total unit` with thousands separators (fractional progress is floored); a task's
        own `unit` field overrides the bar's."""

        def __init__(self):
            super().__init__(table_column=Column(no_wrap=True))

        def render(self, task):
            done = f"{int(task.completed):,}"
            total = f"{int(task.total):,}" if task.total is not None else "?"
            u = task.fields.get("unit", unit)
            return Text(f"{done}/{total}" + (f" {u}" if u else ""), style="progress.download")

    return CountColumn()


def progress_bar(
    *,
    unit: str | None = "",
    fields: Sequence[str] = (),
    bytes_: bool = False,
    console=None,
    enabled: bool = True,
    transient: bool = False,
):
    """A `rich.progress.Progress` with lcfast's columns.

    unit: the word after the count ("windows", "steps"; a task's `unit` field overrides it); None
    shows no count. fields: names of task
    fields shown after the count, each as given (`add_task(..., tps="")`). bytes_: a byte count and
    transfer speed instead of the count. console: where it draws (default: a stderr console).
    enabled=False gives a bar that draws nothing (same API). transient: erased when it stops."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from rich.table import Column

    def text(fmt: str):  # never wrapped onto a second line: the bar gives way instead
        return TextColumn(fmt, table_column=Column(no_wrap=True))

    cols: list = [text("[bold]{task.description}"),
                  BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=3, max_width=BAR_WIDTH))]
    if bytes_:
        cols += [DownloadColumn(table_column=Column(no_wrap=True)),
                 TransferSpeedColumn(table_column=Column(no_wrap=True))]
    elif unit is not None:
        cols.append(_count_column(unit))
    cols += [text(f"{{task.fields[{f}]}}") for f in fields]
    cols.append(_time_column())
    return Progress(*cols, console=console or Console(stderr=True), disable=not enabled, transient=transient,
                    expand=False)


def status(console, message: str):
    """A spinner with `message` while a step without a count runs (a no-op off a terminal)."""
    import contextlib

    if console is None or not console.is_terminal:
        return contextlib.nullcontext()
    return console.status(message, spinner="dots")


__all__ = ["progress_bar", "status", "BAR_WIDTH"]
