"""WSGI middleware around the whole app: request id, X-Served-By, one log line per request.

It sits outside bottle, so its headers are on every response, error responses included.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from webstack_app.proxies import TrustedProxies

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# A request id from the client or the balancer is kept when it is printable and not huge;
# anything else is replaced, so it cannot forge log lines or bloat headers.
_REQUEST_ID_RE = re.compile(r"[\x21-\x7e]{1,200}")
_OWN_HEADERS = {"x-served-by", "x-request-id"}

access_log = logging.getLogger("webstack_app.access")


class RequestContext:
    """Adds X-Served-By and X-Request-ID to every response and logs the request."""

    def __init__(self, app: WSGIApp, instance_name: str, proxies: TrustedProxies) -> None:
        self._app = app
        self._instance_name = instance_name
        self._proxies = proxies

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.monotonic()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex
        environ["webstack.request_id"] = request_id
        status_line = ["-"]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:  # noqa: ANN401
            status_line[0] = status
            headers = [(k, v) for k, v in headers if k.lower() not in _OWN_HEADERS]
            headers += [("X-Served-By", self._instance_name), ("X-Request-ID", request_id)]
            return start_response(status, headers, exc_info)

        body = self._app(environ, start)
        access_log.info(
            '%s "%s %s" %s %.1fms request_id=%s',
            self._proxies.client_address(environ),
            environ.get("REQUEST_METHOD", "-"),
            environ.get("PATH_INFO", "-"),
            status_line[0].split(" ", 1)[0],
            (time.monotonic() - started) * 1000,
            request_id,
        )
        return body
