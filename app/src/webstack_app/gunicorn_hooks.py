"""Server hooks for gunicorn's configuration file:

    from webstack_app.gunicorn_hooks import child_exit

(or `gunicorn -c python:webstack_app.gunicorn_hooks ...` when there is no other file). They
run in gunicorn's master process, which never imports the app itself.
"""

from __future__ import annotations

import os
from typing import Protocol

from prometheus_client import multiprocess

from webstack_app.config import METRICS_DIR_VAR


class _Worker(Protocol):
    pid: int


def child_exit(server: object, worker: _Worker) -> None:
    """A worker exited: with multiprocess metrics, drop its in-flight gauge (it answers nothing
    any more); its counters and histograms stay, so the totals never go back."""
    directory = os.environ.get(METRICS_DIR_VAR)
    if directory:
        multiprocess.mark_process_dead(worker.pid, directory)
