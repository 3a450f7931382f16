"""The two kinds of failure the CLI reports, each as one line.

`DataError` (exit 1): the input is wrong — a corrupt shard, a mismatched state file, an empty corpus.
`UsageError` (exit 2): the invocation is wrong — a bad flag value, a missing path argument.
Library code raises these with a message that names the file or flag; the CLI prints only the
message (traceback with --debug).
"""

from __future__ import annotations


class LcfastError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class DataError(LcfastError, ValueError):
    """Bad data on disk or in memory (exit 1)."""

    exit_code = 1


class UsageError(LcfastError, ValueError):
    """Bad command-line or API argument (exit 2)."""

    exit_code = 2


class LcfastWarning(UserWarning):
    """Something a command did not check or had to assume, said on one stderr line
    (`lcfast: warning: …`) by the CLI (`one_line_warnings`); the command goes on."""


class one_line_warnings:
    """Context manager for a CLI command: every `LcfastWarning` raised inside is printed as one line
    `lcfast: warning: MESSAGE` on stderr, each time, even under PYTHONWARNINGS=ignore (a check that
    was skipped must be said; Python's own format spends a second line on the source)."""

    def __enter__(self) -> one_line_warnings:
        import sys
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("always", LcfastWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, LcfastWarning):
                print(f"lcfast: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc) -> bool:
        self._cm.__exit__(*exc)
        return False


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM, with what was kept: the CLI prints
    `lcfast: interrupted; <kept>` and exits 128 + signal number (130 for Ctrl-C).

    Raised by `interrupt_note` (and by the CLI's SIGTERM handler); a plain KeyboardInterrupt is
    reported the same way, without the note."""

    def __init__(self, kept: str = "", signum: int = 2) -> None:
        super().__init__(kept)
        self.kept = kept
        self.signum = signum


# The interrupts (SIGINT/SIGTERM) the CLI received during the current command, in order
# (lcfast.cli.app.main clears it and its handlers fill it). Ctrl-C inside C code that calls back
# into Python (torch building a tensor from a safetensors buffer) can surface as another exception,
# e.g. "ValueError: could not determine the shape of object type 'torch.storage.UntypedStorage'",
# which a loader would then report as a damaged file: with this record it is reported as what it is.
_SIGNALS: list[int] = []


def note_signal(signum: int) -> None:
    """Record an interrupt the process received (called by the CLI's signal handlers)."""
    _SIGNALS.append(int(signum))


def clear_signals() -> None:
    _SIGNALS.clear()


def signal_received() -> int | None:
    """The last interrupt received during this command (a signal number), or None."""
    return _SIGNALS[-1] if _SIGNALS else None


class interrupt_note:
    """Context manager: an interrupt inside the block becomes `Interrupted(describe())`, so the
    message says what is intact and how to continue (the innermost note wins).

        with interrupt_note(lambda: f"checkpoint {last} is intact; rerun to resume"):
            ...

    `describe` is called only when an interrupt happens (it sees the state at that moment)."""

    def __init__(self, describe) -> None:
        self.describe = describe

    def __enter__(self) -> interrupt_note:
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        if exc is None:
            return False
        if not isinstance(exc, KeyboardInterrupt):
            if signal_received() is None or not isinstance(exc, Exception):
                return False
            # an interrupt turned into another error inside C code (see _SIGNALS): still an interrupt
        elif isinstance(exc, Interrupted) and exc.kept:
            return False
        try:
            kept = str(self.describe() or "")
        except Exception:  # noqa: BLE001 - a failing description must not hide the interrupt
            kept = ""
        raise Interrupted(kept, getattr(exc, "signum", None) or signal_received() or 2) from None


# Native work left running (a tokenizer training stopped by Ctrl-C: its Python thread may return,
# but the library's Rust worker threads go on pulling documents from Python; a torch.distributed
# group retired by lcfast.dist.close: gloo's worker threads may still release a tensor's Python
# object). Normal interpreter shutdown would let them call into a finalized interpreter, and the
# process would abort (SIGABRT, "FATAL: exception not rethrown" / "terminate called without an
# active exception") instead of exiting with its code: the console script leaves with os._exit
# once any was recorded (lcfast.cli.app.main).
_UNSTOPPABLE: list = []


def left_running(what) -> None:
    """Record `what` (e.g. the threading.Thread that started it) as native work left running."""
    _UNSTOPPABLE.append(what)


def unstoppable_work_left() -> bool:
    """Whether `left_running` recorded anything in this process."""
    return bool(_UNSTOPPABLE)
