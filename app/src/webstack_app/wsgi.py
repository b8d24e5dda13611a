"""The WSGI entry point: `gunicorn -k gevent webstack_app.wsgi:app`.

The settings are read when this module is imported: in each worker, or once in the master
with --preload. A bad setting prints one line, `config error: ...`, and gunicorn stops with
a non-zero exit status (see startup.py for how and why only one worker reports it).
"""

from __future__ import annotations

import os

from webstack_app import startup
from webstack_app.config import ConfigError, load_settings
from webstack_app.middleware import RequestContext
from webstack_app.web import create_app


def load() -> RequestContext:
    try:
        settings = load_settings(os.environ)
    except ConfigError as error:
        startup.fail(str(error))
    return create_app(settings)


app = load()
