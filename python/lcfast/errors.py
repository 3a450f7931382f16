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
