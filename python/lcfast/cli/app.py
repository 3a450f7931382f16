"""Entry point of the `lcfast` command.

Each command module exposes `register(app)`; this file only assembles them and turns exceptions
into the error contract (README "Commands", docs/bad-input.md): usage errors exit 2, data errors exit 1,
one line each on stderr, traceback only with --debug.
"""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from lcfast.cli._clickcompat import Abort, ClickException, Exit, UsageError
from lcfast.errors import LcfastError, unstoppable_work_left

app = typer.Typer(
    name="lcfast",
    help="Fast neural-collapse measurement for causal language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_STATE = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _STATE["debug"] = debug or os.environ.get("LCFAST_DEBUG") == "1"
    from lcfast.threads import apply_threads

    apply_threads()  # torch threads: the free CPUs, or LCFAST_THREADS (lcfast.threads)


def _register_all() -> None:
    from lcfast.cli import analyze, bench, collect, corpus, data, demo, doctor, export, train

    for module in (demo, corpus, data, train, collect, export, analyze, bench, doctor):
        module.register(app)


_register_all()


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


#: the placeholder shown after an option that takes a value, by click type name
_METAVARS = {"integer": "INT", "float": "FLOAT", "path": "PATH", "text": "TEXT", "boolean": "BOOL"}


def _tidy_param(p) -> None:
    """One convention for every command's help: flags show no type, an option's value is an
    upper-case word (explicit metavars kept), an argument is its upper-case name, and no Python
    type (`<list[Path]>`) is shown — Typer ≥ 0.25 prints one per parameter."""
    if getattr(p, "param_type_name", "") == "argument":
        p.metavar = (p.metavar or p.name or "ARG").upper().rstrip(".")
        p.display_type_rich = lambda ctx=None: None
        if hasattr(p, "_usage_display_name"):  # Typer ≥ 0.29 braces required arguments: `{MODEL}`
            p._usage_display_name = lambda p=p: ((p.metavar if p.required else f"[{p.metavar}]")
                                                 + ("..." if p.nargs != 1 else ""))
    elif getattr(p, "is_flag", False) or getattr(p, "count", False):
        p.metavar = ""
    elif p.metavar is None:
        p.metavar = _METAVARS.get(_type_name(p), "VALUE")


def _type_name(p) -> str:
    """click's type name of a parameter ("integer", "path", …), on Typer with or without click."""
    t = getattr(p, "type", None)  # click parameters
    if t is not None:
        return str(getattr(t, "name", ""))
    desc = getattr(p, "type_descriptor", None)  # Typer ≥ 0.25
    if desc is None:
        return ""
    if getattr(desc, "is_path", False):
        return "path"
    return {int: "integer", float: "float", str: "text", bool: "boolean"}.get(getattr(desc, "annotation", None), "")


def _tidy_help(cmd) -> None:
    """Apply `_tidy_param` to every parameter (and the --help flag) of `cmd` and its subcommands."""
    for p in cmd.params:
        _tidy_param(p)
    plain = cmd.get_help_option

    def get_help_option(ctx):
        opt = plain(ctx)
        if opt is not None:
            _tidy_param(opt)
        return opt

    cmd.get_help_option = get_help_option
    for sub in (getattr(cmd, "commands", None) or {}).values():
        _tidy_help(sub)


def _invoke(args: list[str]) -> int:
    """Run the command line `args`; its exit status (exceptions other than exits propagate).

    The click command is driven directly, not through Typer's `main`: in non-standalone mode that
    turns Ctrl-C and `typer.Exit(n)` into a *return value* (and drops the note of an
    `Interrupted`), which is how `lcfast` once exited 0 after an interrupt."""
    cmd = typer.main.get_command(app)
    _tidy_help(cmd)
    try:
        with cmd.make_context("lcfast", list(args)) as ctx:
            cmd.invoke(ctx)
    except Exit as e:
        return int(e.exit_code or 0)
    return 0


def _on_sigterm(signum, frame) -> None:
    from lcfast.errors import Interrupted, note_signal

    note_signal(signum)
    raise Interrupted("", signum)


def _report_interrupt(signum: int) -> int:
    """`lcfast: interrupted` for an interrupt that surfaced as another error; its exit status."""
    import signal

    how = "interrupted" if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"
    print(f"lcfast: {how}", file=sys.stderr)
    return 128 + signum


def _on_sigint(signum, frame) -> None:
    """Python's own Ctrl-C behaviour (KeyboardInterrupt), plus a record of it (lcfast.errors._SIGNALS):
    raised inside C code that calls back into Python, the KeyboardInterrupt can come out as another
    error, which must still be reported as an interrupt."""
    from lcfast.errors import note_signal

    note_signal(signum)
    raise KeyboardInterrupt


def _redeliver_swallowed_interrupt(unraisable) -> None:
    """sys.unraisablehook: Python swallows an exception raised where it cannot propagate (a weakref
    callback or __del__ running when Ctrl-C arrived, which happens often inside matplotlib). An
    interrupt lost that way is raised again 20 ms later from a SIGALRM handler, in ordinary code
    (were it swallowed again, this repeats). Signals sent from here would be handled, and lost,
    inside this very hook."""
    exc = unraisable.exc_value
    if not isinstance(exc, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    import signal

    signum = int(getattr(exc, "signum", signal.SIGINT))

    def again(_sig, _frame):
        from lcfast.errors import Interrupted

        raise Interrupted("", signum)

    try:
        _STATE.setdefault("alarm", signal.signal(signal.SIGALRM, again))  # the handler to restore
        signal.setitimer(signal.ITIMER_REAL, 0.02)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGALRM (Windows)
        sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. Returns on success; otherwise exits the process with 1 (data error), 2 (usage
    error), or 128 + the signal number after Ctrl-C (130) or SIGTERM (143), which are handled alike:
    temporaries removed, finished outputs kept, one line saying what is intact."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("LCFAST_DEBUG") == "1"
    import signal

    from lcfast.errors import clear_signals, signal_received

    clear_signals()
    try:  # SIGTERM (kill, a batch scheduler, torchrun stopping its workers) cleans up like Ctrl-C
        prev_term = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread
        prev_term = None
    prev_int = None
    if prev_term is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        prev_int = signal.signal(signal.SIGINT, _on_sigint)  # (left alone where a caller ignores Ctrl-C)
    prev_hook, sys.unraisablehook = sys.unraisablehook, _redeliver_swallowed_interrupt
    try:
        code = _invoke(args)
    except Abort:
        print("lcfast: aborted", file=sys.stderr)
        code = 130
    except UsageError as e:
        if debug:
            raise
        hint = f" (see 'lcfast {e.ctx.command_path.split(' ', 1)[-1] if e.ctx else ''} --help')".replace(
            "lcfast lcfast", "lcfast"
        )
        if _one_line(e.format_message()):  # (no message: `lcfast` alone, the help was printed)
            print(f"lcfast: usage error: {_one_line(e.format_message())}{hint}", file=sys.stderr)
        code = 2
    except ClickException as e:
        if debug:
            raise
        print(f"lcfast: error: {_one_line(e.format_message())}", file=sys.stderr)
        code = e.exit_code or 1
    except LcfastError as e:
        if debug:
            raise
        if signal_received() is not None:  # an interrupt that surfaced as another error (lcfast.errors._SIGNALS)
            code = _report_interrupt(signal_received())
        else:
            kind = "usage error" if e.exit_code == 2 else "error"
            print(f"lcfast: {kind}: {_one_line(str(e))}", file=sys.stderr)
            code = e.exit_code
    except KeyboardInterrupt as e:
        signum = int(getattr(e, "signum", signal.SIGINT))
        kept = _one_line(getattr(e, "kept", "") or "")
        how = "interrupted" if signum == signal.SIGINT else f"interrupted by {signal.Signals(signum).name}"
        print(f"lcfast: {how}" + (f"; {kept}" if kept else ""), file=sys.stderr)
        code = 128 + signum
    except BrokenPipeError:  # `lcfast … | head`: the reader went away
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except (OSError, MemoryError) as e:
        if debug:
            raise
        if signal_received() is not None:
            code = _report_interrupt(signal_received())
        else:
            print(f"lcfast: error: {_one_line(f'{type(e).__name__}: {e}')}", file=sys.stderr)
            code = 1
    except Exception:
        if debug or signal_received() is None:
            raise  # a bug: the traceback is wanted
        code = _report_interrupt(signal_received())
    finally:
        sys.unraisablehook = prev_hook
        if "alarm" in _STATE:  # a redelivered interrupt's timer (see above) must not outlive main()
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, _STATE.pop("alarm"))
        if prev_term is not None:
            signal.signal(signal.SIGTERM, prev_term)
        if prev_int is not None:
            signal.signal(signal.SIGINT, prev_int)
    if argv is None and unstoppable_work_left():  # the console script only: never in-process
        # (an interrupted tokenizer training's Rust workers, a torch.distributed group's gloo
        # threads: lcfast.errors.left_running) — whatever the exit status, finalizing the
        # interpreter around them would abort or hang the process
        for f in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                f.flush()
        os._exit(code)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
