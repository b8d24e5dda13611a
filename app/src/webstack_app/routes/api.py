"""The JSON API over the same session data as the page."""

from __future__ import annotations

import json
from typing import Any

from bottle import Bottle, request, response

from webstack_app.context import AppContext
from webstack_app.errors import json_error
from webstack_app.sessions import NoteRejected, SessionData, validate_note


def read_json_object() -> dict[str, Any]:
    """The request body as a JSON object, or a 415/400 JSON error."""
    content_type = request.content_type.split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise json_error(
            415,
            "unsupported_media_type",
            f"send a JSON object with Content-Type: application/json, got {content_type!r}",
        )
    raw = request.body.read()
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise json_error(400, "invalid_json", f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise json_error(400, "invalid_json", 'request body must be a JSON object: {"note": "..."}')
    return payload


def register(app: Bottle, ctx: AppContext) -> None:
    @app.get("/api/session")
    def get_session() -> dict[str, Any]:
        """The session, or an empty one; reading creates nothing in Redis."""
        response.set_header("Cache-Control", "no-store")
        session_id = ctx.session_id()
        data = ctx.sessions.load(session_id) if session_id else None
        if session_id and data is not None:
            ctx.remember_session(session_id)
        return ctx.session_document(data or SessionData())

    @app.post("/api/session/notes")
    def add_note() -> dict[str, Any]:
        payload = read_json_object()
        try:
            note = validate_note(payload.get("note"))
            session_id, data = ctx.change_session(lambda data: data.add_note(note))
        except NoteRejected as rejected:
            raise json_error(rejected.status, rejected.code, str(rejected)) from None
        ctx.remember_session(session_id)
        response.status = 201
        response.set_header("Cache-Control", "no-store")
        return ctx.session_document(data)

    @app.delete("/api/session")
    def delete_session() -> dict[str, Any]:
        session_id = ctx.session_id()
        if session_id:
            ctx.sessions.delete(session_id)
        ctx.forget_session()
        response.set_header("Cache-Control", "no-store")
        return ctx.session_document(SessionData())
