"""A simulated full disk for the crash-safety and bad-input tests (importable as `diskfull`)."""

from __future__ import annotations

import errno
import os


def make_disk_full(monkeypatch) -> None:
    """Make every file opened through os.fdopen (what lcfast.io's atomic writer uses) fail its
    writes with ENOSPC, as a full disk would; the file handle is still closed normally."""
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real_fdopen(fd, *a, **k)))
