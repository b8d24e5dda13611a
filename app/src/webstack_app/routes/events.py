"""`GET /events`: a Server-Sent Events stream, the long-lived connection coroutines are for.

One event at once (so a client knows the stream is open), then one every `every_ms`
milliseconds until `seconds` have passed, then an `end` event and the response ends. Under the
gevent worker `time.sleep` is monkey-patched to yield: a held stream costs a greenlet and a
socket, not a worker, so one worker holds thousands. Under the sync worker each stream holds a
whole worker for its duration.

The wait is bounded (`seconds` at most EVENTS_MAX_SECONDS), so a stream never outlives a
graceful restart by more than that. Proxies in front must not buffer the stream: the answer
says so to nginx (`X-Accel-Buffering: no`), and the balancer's location for it turns
buffering off as well.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from bottle import Bottle, response

from webstack_app.context import AppContext
from webstack_app.routes.health import int_param

EVENTS_MIN_EVERY_MS = 100
EVENTS_MAX_EVERY_MS = 60_000
EVENTS_MAX_SECONDS = 600
EVENTS_DEFAULT_EVERY_MS = 1000
EVENTS_DEFAULT_SECONDS = 30


def sse(event: str, data: dict[str, object], event_id: int | None = None) -> bytes:
    """One event in the text/event-stream format (data on one line: it is JSON)."""
    head = "" if event_id is None else f"id: {event_id}\n"
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def register(app: Bottle, ctx: AppContext) -> None:
    served_by = ctx.settings.instance_name

    @app.get("/events")
    def events() -> Iterator[bytes]:
        every_ms = int_param(
            "every_ms", EVENTS_MIN_EVERY_MS, EVENTS_MAX_EVERY_MS, EVENTS_DEFAULT_EVERY_MS
        )
        seconds = int_param("seconds", 1, EVENTS_MAX_SECONDS, EVENTS_DEFAULT_SECONDS)
        response.content_type = "text/event-stream; charset=utf-8"
        response.set_header("Cache-Control", "no-store")
        response.set_header("X-Accel-Buffering", "no")

        def stream() -> Iterator[bytes]:
            started = time.monotonic()
            ends = started + seconds
            # `retry` tells an EventSource how long to wait before reconnecting.
            first = sse("tick", {"n": 0, "served_by": served_by}, 0)
            yield f"retry: {every_ms}\n\n".encode() + first
            sent = 1
            while True:
                due = started + sent * every_ms / 1000
                if due >= ends:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                yield sse("tick", {"n": sent, "served_by": served_by}, sent)
                sent += 1
            time.sleep(max(0.0, ends - time.monotonic()))
            yield sse("end", {"events": sent, "seconds": seconds, "served_by": served_by})

        return stream()
