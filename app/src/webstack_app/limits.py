"""The request body limit (WEBSTACK_MAX_BODY_BYTES), applied before any route reads a body."""

from __future__ import annotations

import io
from collections.abc import Callable

from bottle import request

from webstack_app.errors import json_error

_READ_CHUNK = 64 * 1024


def limit_body(max_bytes: int) -> Callable[[], None]:
    """A before_request hook: 413 for a body over `max_bytes`, declared or streamed.

    A declared Content-Length is refused before anything is read. A chunked body is read up
    to one byte past the limit and then handed to the route as an ordinary buffered body
    (gunicorn has already removed the chunk framing, which bottle would otherwise try to
    parse a second time).
    """

    def too_large() -> Exception:
        return json_error(
            413,
            "payload_too_large",
            f"request body is larger than the limit of {max_bytes} bytes",
        )

    def hook() -> None:
        environ = request.environ
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not chunked:
            if request.content_length > max_bytes:
                raise too_large()
            return
        stream = environ["wsgi.input"]
        body = bytearray()
        while len(body) <= max_bytes:
            chunk = stream.read(min(_READ_CHUNK, max_bytes + 1 - len(body)))
            if not chunk:
                break
            body += chunk
        if len(body) > max_bytes:
            raise too_large()
        environ["wsgi.input"] = io.BytesIO(bytes(body))
        environ["CONTENT_LENGTH"] = str(len(body))
        del environ["HTTP_TRANSFER_ENCODING"]

    return hook
