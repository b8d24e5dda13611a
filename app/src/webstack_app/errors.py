"""Every error leaves as JSON with a status code; no traceback ever reaches a client.

Body shape: {"error": "<code>", "message": "<what went wrong>", "request_id": "<id>"}.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from bottle import HTTPError, HTTPResponse, request, response
from prometheus_client import Counter

from webstack_app.store import StoreUnavailable

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal_error",
    503: "service_unavailable",
}


def request_id() -> str:
    return str(request.environ.get("webstack.request_id", ""))


def error_body(code: str, message: str) -> str:
    return json.dumps({"error": code, "message": message, "request_id": request_id()})


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> HTTPResponse:
    """A ready JSON error response; `raise` it from a route or hook.

    Raising replaces the response being built, Set-Cookie headers included, so an error
    never changes the client's cookie.
    """
    return HTTPResponse(
        body=error_body(code, message),
        status=status,
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "no-store",
            **(headers or {}),
        },
    )


def handle_http_error(error: HTTPError) -> str:
    """Bottle's error handler for what the framework raises: 404, 405, 413, 500 ..."""
    status = error.status_code
    if status == 404:
        message = f"no such resource: {request.method} {request.path}"
    elif status == 405:
        allowed = response.get_header("Allow", "")
        message = f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
    elif status >= 500:
        if error.exception is not None:
            log.error(
                "request %s: unhandled %s: %s",
                request_id(),
                type(error.exception).__name__,
                error.exception,
            )
        message = "internal server error; the request id is in the server log"
    else:
        message = str(error.body or error.status_line)
    response.content_type = "application/json"
    response.set_header("Cache-Control", "no-store")
    return error_body(_CODES.get(status, f"http_{status}"), message)


def store_unavailable_as_503(
    store_errors: Counter,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Bottle plugin: a route that finds Redis unreachable answers 503 and keeps the cookie;
    each such answer counts in `store_errors`."""

    def plugin(callback: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - a route returns anything
            try:
                return callback(*args, **kwargs)
            except StoreUnavailable as error:
                store_errors.inc()
                log.warning("request %s: session store unavailable: %s", request_id(), error)
                raise json_error(
                    503,
                    "session_store_unavailable",
                    "the session store is unavailable; your session is kept, try again shortly",
                    headers={"Retry-After": "1"},
                ) from None

        return wrapper

    return plugin
