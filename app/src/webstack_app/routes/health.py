"""Endpoints for operators and load tests: health, readiness, metrics, a cheap page, a slow page."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from bottle import Bottle, request, response

from webstack_app.context import AppContext
from webstack_app.errors import json_error
from webstack_app.store import StoreUnavailable

IO_MAX_MS = 2000
_DIGITS = re.compile(r"\d{1,6}")

log = logging.getLogger(__name__)


def int_param(name: str, low: int, high: int, default: int | None = None) -> int:
    """An integer query parameter in [low, high], or a 400 JSON error. Required unless a
    default is given (used when the parameter is absent)."""
    raw = request.query.get(name)
    if raw is None and default is not None:
        return default
    if raw is None or not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        got = "nothing" if raw is None else repr(raw[:20])
        raise json_error(
            400,
            "invalid_parameter",
            f"query parameter {name!r} must be an integer from {low} to {high}, got {got}",
        )
    return int(raw)


def register(app: Bottle, ctx: AppContext) -> None:
    served_by = ctx.settings.instance_name

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """The process is alive and serving; checks nothing else."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict[str, Any]:
        """Ready when Redis answers PING within WEBSTACK_REDIS_TIMEOUT."""
        response.set_header("Cache-Control", "no-store")
        try:
            ctx.redis.ping()
        except StoreUnavailable as error:
            log.warning("readiness check failed: %s", error)
            response.status = 503
            return {"status": "unavailable", "redis": "unreachable"}
        return {"status": "ok", "redis": "ok"}

    @app.get("/hello")
    def hello() -> str:
        response.content_type = "text/plain; charset=utf-8"
        return f"hello from {served_by}\n"

    @app.get("/io")
    def io() -> dict[str, Any]:
        """Waits `ms` milliseconds like a slow backend call would. Under the gevent worker
        time.sleep is monkey-patched to yield, so other requests run meanwhile."""
        ms = int_param("ms", 0, IO_MAX_MS)
        time.sleep(ms / 1000)
        return {"slept_ms": ms, "served_by": served_by}

    @app.get("/metrics")
    def metrics() -> bytes:
        """Prometheus metrics of every worker of this server, for the monitoring machine
        (the balancers answer 404 for /metrics: clients never get here through them)."""
        body, content_type = ctx.metrics.exposition(request.get_header("Accept"))
        response.content_type = content_type
        response.set_header("Cache-Control", "no-store")
        return body
