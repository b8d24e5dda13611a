"""The page a person looks at: `GET /` and the form behind it, `POST /notes`."""

from __future__ import annotations

from bottle import Bottle, request, response

from webstack_app.context import AppContext
from webstack_app.pages import render_index
from webstack_app.sessions import NoteRejected, SessionData, validate_note

# Defence in depth for the one HTML page: no scripts at all, forms only to this site.
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def _count_visit(data: SessionData) -> None:
    data.visits += 1


def register(app: Bottle, ctx: AppContext) -> None:
    def page(data: SessionData, error: str = "") -> str:
        for name, value in _PAGE_HEADERS.items():
            response.set_header(name, value)
        return render_index(ctx.settings.instance_name, data, ctx.settings.session_ttl, error)

    @app.get("/")
    def index() -> str:
        if request.method == "HEAD":
            # bottle answers HEAD with the GET route; a HEAD changes nothing, not even a visit.
            return page(SessionData())
        session_id, data = ctx.change_session(_count_visit)
        ctx.remember_session(session_id)
        return page(data)

    @app.post("/notes")
    def add_note() -> str:
        try:
            note = validate_note(request.forms.getunicode("note"))
            session_id, _ = ctx.change_session(lambda data: data.add_note(note))
        except NoteRejected as rejected:
            known = ctx.session_id()
            data = ctx.sessions.load(known) if known else None
            response.status = rejected.status
            return page(data or SessionData(), error=str(rejected))
        ctx.remember_session(session_id)
        # Post/redirect/get. A relative Location: bottle's redirect() would build an absolute
        # one from X-Forwarded-Host, which nothing here vouches for.
        response.status = 303
        response.set_header("Location", "/")
        response.set_header("Cache-Control", "no-store")
        return ""
