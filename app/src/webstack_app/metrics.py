"""Prometheus metrics of the app, served at `GET /metrics` on the app's own port.

Two modes, chosen the way prometheus_client chooses them, by PROMETHEUS_MULTIPROC_DIR in the
process environment (read and checked in config.py as `Settings.metrics_dir`):

- unset: one process (the tests, a single worker started by hand). The values live in memory,
  in a registry of this app's own, and /metrics shows them.
- set (gunicorn with several workers): every worker writes its values to files of its own in
  that directory, and /metrics, whichever worker answers it, merges the files of all workers,
  exited ones included, so counters never go back. The directory must be empty when the server
  starts (systemd's RuntimeDirectory is), and gunicorn's master must run the `child_exit` hook
  of gunicorn_hooks.py, which drops an exited worker's in-flight gauge.

Every label has a bounded set of values: `route` is the route's pattern (`/api/session`), or
`other` when no route matched; `method` is one of the usual methods or `other`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bottle import Bottle, HTTPError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds. Fine below 100 ms, where most answers are; up to 2.5 s for /io (2 s at most).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class AppMetrics:
    """The app's metrics; `multiprocess_dir` is Settings.metrics_dir."""

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # In multiprocess mode the values go to files and /metrics reads the files: the
        # metrics then belong to no registry.
        self._registry = None if multiprocess_dir else CollectorRegistry()
        registry = self._registry
        self.requests = Counter(
            "webstack_http_requests",
            "HTTP requests answered, by route pattern, method and status code.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "webstack_http_request_duration_seconds",
            "Time from the request to its answer in the app, by route pattern and method.",
            ("route", "method"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "webstack_http_requests_in_flight",
            "Requests being answered now, summed over the live worker processes.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.session_store_errors = Counter(
            "webstack_session_store_errors",
            "Requests answered 503 because the session store (Redis) failed or did not answer.",
            registry=registry,
        )

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics of every worker in the format `accept` asks for, and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self._collecting_registry()), content_type

    def _collecting_registry(self) -> CollectorRegistry:
        if self._registry is not None:
            return self._registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.multiprocess_dir))
        return registry


class RequestMetrics:
    """WSGI middleware around the bottle app: counts, times and tracks every request."""

    def __init__(self, app: Bottle, metrics: AppMetrics) -> None:
        self._app = app
        self._metrics = metrics

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        status = ["500"]  # what a request counts as if the app raised before answering

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:  # noqa: ANN401
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        try:
            with self._metrics.in_flight.track_inprogress():
                return self._app(environ, start)
        finally:
            route = self.route_of(environ)
            method = environ.get("REQUEST_METHOD", "")
            method = method if method in METHODS else OTHER
            self._metrics.requests.labels(route, method, status[0]).inc()
            self._metrics.duration.labels(route, method).observe(time.perf_counter() - started)

    def route_of(self, environ: dict[str, Any]) -> str:
        """The pattern of the route that answered, or OTHER when none matched.

        A request refused before routing (the body limit runs first) is matched here, so a 413
        counts under its route too.
        """
        route = environ.get("bottle.route")
        if route is None:
            try:
                route, _ = self._app.router.match(environ)
            except HTTPError:  # 404 or 405: no route, and the raw path must not be a label
                return OTHER
        return str(route.rule)
