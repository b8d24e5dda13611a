"""Failing start-up cleanly under gunicorn when the settings are bad.

A worker that cannot load its settings prints one line, `config error: ...`, and exits with
status 4, gunicorn's "App failed to load": the master then stops, with exit status 4,
instead of restarting workers forever.

With several workers all of them fail at about the same time, and gunicorn 27's master
crashes with a traceback of its own (exit status 1) when a second worker exits with status 4
while it is stopping. So per master one worker reports and exits 4; the others stay silent
and exit 0 once that master, now stopping, has sent them SIGTERM:

- the reporting worker holds a token, a Linux abstract-namespace socket named after the
  master's pid, and keeps it a moment (LINGER_SECONDS) so slower siblings find it taken;
- a sibling that finds the token taken, or that was already told to stop (gunicorn's
  SIGTERM handler has cleared its worker's `alive` flag), is silent.

Anywhere else (gunicorn's master with --preload, another server, a shell) it simply prints
the line and exits 4.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from typing import NoReturn

APP_LOAD_ERROR = 4  # gunicorn.arbiter.Arbiter.APP_LOAD_ERROR
LINGER_SECONDS = 1.5
SIBLING_WAIT_SECONDS = 15.0


def fail(message: str) -> NoReturn:
    """Report `message` once per gunicorn master and exit; see the module docstring."""
    worker = _gunicorn_worker()
    if worker is None:
        _report(message)
        sys.exit(APP_LOAD_ERROR)

    def stopping() -> bool:
        return not getattr(worker, "alive", True)

    if not stopping() and _claim_report():
        _report(message)
        time.sleep(LINGER_SECONDS)
        sys.exit(APP_LOAD_ERROR)
    deadline = time.monotonic() + SIBLING_WAIT_SECONDS
    while not stopping() and time.monotonic() < deadline:
        time.sleep(0.05)  # under gevent this lets the hub run the signal handler
    os._exit(0 if stopping() else 1)


def _report(message: str) -> None:
    with contextlib.suppress(OSError):  # stderr gone: the exit status still tells
        print(f"config error: {message}", file=sys.stderr, flush=True)


def _gunicorn_worker() -> object | None:
    """The gunicorn worker this process is, found through its SIGTERM handler, or None."""
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return owner if type(owner).__module__.startswith("gunicorn.workers") else None


def _claim_report() -> bool:
    """Whether this process is the first of its parent's children to claim the report."""
    if not sys.platform.startswith("linux"):
        return True
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        claim.bind(f"\0webstack-app-config-error-{os.getppid()}")
    except OSError:
        claim.close()
        return False
    claim.detach()  # the descriptor stays open, and the claim held, until this process ends
    return True
