"""Entry point of the `lcfast` command.

Each command module exposes `register(app)`; this file only assembles them and turns exceptions
into the contract of DESIGN §2: usage errors exit 2, data errors exit 1, one line each on stderr,
traceback only with --debug.
"""

from __future__ import annotations

import os
import sys

import typer

from lcfast.cli._clickcompat import Abort, ClickException, Exit, UsageError

from lcfast.errors import LcfastError

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


def _register_all() -> None:
    from lcfast.cli import analyze, bench, collect, corpus, data, demo, doctor, export, train

    for module in (demo, corpus, data, train, collect, export, analyze, bench, doctor):
        module.register(app)


_register_all()


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exits the process with 0, 1 (data error) or 2 (usage error)."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("LCFAST_DEBUG") == "1"
    try:
        app(args=args, prog_name="lcfast", standalone_mode=False)
    except Exit as e:  # typer.Exit
        sys.exit(e.exit_code)
    except Abort:
        print("lcfast: aborted", file=sys.stderr)
        sys.exit(130)
    except UsageError as e:
        if debug:
            raise
        hint = f" (see 'lcfast {e.ctx.command_path.split(' ', 1)[-1] if e.ctx else ''} --help')".replace(
            "lcfast lcfast", "lcfast"
        )
        print(f"lcfast: usage error: {_one_line(e.format_message())}{hint}", file=sys.stderr)
        sys.exit(2)
    except ClickException as e:
        if debug:
            raise
        print(f"lcfast: error: {_one_line(e.format_message())}", file=sys.stderr)
        sys.exit(e.exit_code or 1)
    except LcfastError as e:
        if debug:
            raise
        kind = "usage error" if e.exit_code == 2 else "error"
        print(f"lcfast: {kind}: {_one_line(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("lcfast: interrupted", file=sys.stderr)
        sys.exit(130)
    except (OSError, MemoryError) as e:
        if debug:
            raise
        print(f"lcfast: error: {_one_line(f'{type(e).__name__}: {e}')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
