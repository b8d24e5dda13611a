"""Every endpoint and every bad input, through the WSGI app in this process, real Redis."""

from __future__ import annotations

import json
import re
import time

import pytest

from support import KEY_PREFIX, WsgiClient, free_port, parse_sse, session_id_of, session_keys
from webstack_app.routes import events as events_module
from webstack_app.sessions import SessionStore


def assert_json_error(result, status: int, code: str, message_part: str = "") -> dict:
    assert result.status == status, result.body
    body = result.json()
    assert body["error"] == code
    assert message_part in body["message"]
    assert body["request_id"] == result.header("X-Request-ID")
    assert b"Traceback" not in result.body
    return body


# --- the page -------------------------------------------------------------------------


def test_index_counts_visits_in_a_new_session(client, redis_admin):
    first = client.get("/")
    assert first.status == 200
    assert first.header("Content-Type") == "text/html; charset=utf-8"
    assert first.header("Cache-Control") == "no-store"
    assert 'id="served-by">test-app<' in first.text
    assert re.search(r'id="visits">1<', first.text)
    assert client.cookie
    second = client.get("/")
    assert re.search(r'id="visits">2<', second.text)
    assert second.session_cookie() == first.session_cookie()  # same session, Max-Age renewed
    stored = json.loads(redis_admin.get(f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"))
    assert stored == {"visits": 2, "notes": []}


def test_note_form_adds_and_redirects(client):
    added = client.post(
        "/notes",
        body=b"note=hello+there",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert added.status == 303
    assert added.header("Location") == "/"
    assert added.session_cookie()
    page = client.get("/")
    assert "<li>hello there</li>" in page.text


def test_note_form_is_xss_safe(client):
    payload = "<script>alert('x')</script>&\"<img src=x onerror=alert(1)>"
    client.post(
        "/notes",
        body=f"note={payload}".replace("&", "%26").replace("+", "%2B").encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    page = client.get("/")
    assert "<script>alert" not in page.text
    assert "<img" not in page.text
    assert "&lt;script&gt;alert(&#039;x&#039;)&lt;/script&gt;&amp;&quot;&lt;img" in page.text
    assert "script-src" not in page.header("Content-Security-Policy")  # default-src 'none'
    assert page.header("Content-Security-Policy").startswith("default-src 'none'")


def test_note_form_rejects_bad_note_with_a_page(client):
    client.get("/")
    for body in (b"note=", b"note=%20%20", b"other=1", b"note=" + b"x" * 501):
        result = client.post(
            "/notes", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert result.status == 400
        assert 'class="error"' in result.text
        assert re.search(r'id="visits">1<', result.text)  # the session is shown, not counted


def test_note_form_without_session_creates_none_on_bad_input(client, redis_admin):
    before = session_keys(redis_admin)
    result = client.post(
        "/notes", body=b"note=", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert result.status == 400
    assert result.session_cookie() is None
    assert session_keys(redis_admin) == before


# --- the JSON API ---------------------------------------------------------------------


def test_api_session_without_cookie_creates_nothing(client, redis_admin):
    before = session_keys(redis_admin)
    result = client.get("/api/session")
    assert result.status == 200
    assert result.json() == {"visits": 0, "notes": [], "served_by": "test-app"}
    assert result.session_cookie() is None
    assert session_keys(redis_admin) == before


def test_api_add_notes_and_read_them(client):
    client.get("/")
    added = client.post("/api/session/notes", json_body={"note": "  first  "})
    assert added.status == 201
    assert added.json() == {"visits": 1, "notes": ["first"], "served_by": "test-app"}
    client.post("/api/session/notes", json_body={"note": "ünïcode ✓"})
    result = client.get("/api/session")
    assert result.status == 200
    assert result.json() == {"visits": 1, "notes": ["first", "ünïcode ✓"], "served_by": "test-app"}
    assert result.header("Cache-Control") == "no-store"


def test_api_add_note_starts_a_session(client, redis_admin):
    added = client.post("/api/session/notes", json_body={"note": "n"})
    assert added.status == 201
    assert added.session_cookie()
    assert f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}" in session_keys(redis_admin)


def test_api_delete_clears_session_and_cookie(client, redis_admin):
    client.post("/api/session/notes", json_body={"note": "n"})
    key = f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"
    assert redis_admin.exists(key)
    deleted = client.delete("/api/session")
    assert deleted.status == 200
    assert deleted.json() == {"visits": 0, "notes": [], "served_by": "test-app"}
    set_cookie = deleted.header("Set-Cookie")
    assert set_cookie.startswith("webstack_session=; Path=/; Max-Age=0")
    assert not redis_admin.exists(key)
    assert client.cookie is None
    assert client.get("/api/session").json()["notes"] == []


def test_note_length_limits(client):
    assert client.post("/api/session/notes", json_body={"note": "x" * 500}).status == 201
    assert_json_error(
        client.post("/api/session/notes", json_body={"note": "x" * 501}),
        400,
        "invalid_note",
        "1 to 500 characters long, got 501",
    )
    assert_json_error(
        client.post("/api/session/notes", json_body={"note": ""}), 400, "invalid_note"
    )
    assert_json_error(
        client.post("/api/session/notes", json_body={"note": " \n "}), 400, "invalid_note"
    )


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, "missing_note"),
        ({"note": None}, "missing_note"),
        ({"note": 5}, "invalid_note"),
        ({"note": ["a"]}, "invalid_note"),
        ({"note": {"a": 1}}, "invalid_note"),
    ],
)
def test_note_must_be_a_string(client, payload, code):
    assert_json_error(client.post("/api/session/notes", json_body=payload), 400, code)


def test_at_most_100_notes(client, redis_admin):
    client.post("/api/session/notes", json_body={"note": "first"})
    key = f"{KEY_PREFIX}:session:{session_id_of(client.cookie)}"
    redis_admin.set(key, json.dumps({"visits": 3, "notes": [f"n{i}" for i in range(100)]}), ex=600)
    assert_json_error(
        client.post("/api/session/notes", json_body={"note": "one more"}),
        409,
        "too_many_notes",
        "at most 100 notes",
    )
    form = client.post(
        "/notes", body=b"note=more", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status == 409
    assert "at most 100 notes" in form.text
    assert len(json.loads(redis_admin.get(key))["notes"]) == 100


@pytest.mark.parametrize(
    "body",
    [b"{bad json", b"", b"\xff\xfe\x00garbage", b'{"note": "unterminated', b"[" * 50000],
)
def test_malformed_json_is_400(client, body):
    result = client.post(
        "/api/session/notes", body=body, headers={"Content-Type": "application/json"}
    )
    assert_json_error(result, 400, "invalid_json", "not valid JSON")


@pytest.mark.parametrize("body", [b"[]", b'"note"', b"42", b"null"])
def test_json_that_is_not_an_object_is_400(client, body):
    result = client.post(
        "/api/session/notes", body=body, headers={"Content-Type": "application/json"}
    )
    assert_json_error(result, 400, "invalid_json", "must be a JSON object")


def test_wrong_content_type_is_415(client):
    result = client.post(
        "/api/session/notes",
        body=b"note=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_json_error(result, 415, "unsupported_media_type", "application/json")


def test_json_with_charset_is_accepted(client):
    result = client.post(
        "/api/session/notes",
        body=b'{"note": "x"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert result.status == 201


def test_oversize_body_is_413(make_app):
    client = WsgiClient(make_app(WEBSTACK_MAX_BODY_BYTES="2048"))
    big = json.dumps({"note": "x" * 3000}).encode()
    result = client.post(
        "/api/session/notes", body=big, headers={"Content-Type": "application/json"}
    )
    assert_json_error(result, 413, "payload_too_large", "limit of 2048 bytes")
    chunked = client.post(
        "/api/session/notes", body=big, headers={"Content-Type": "application/json"}, chunked=True
    )
    assert_json_error(chunked, 413, "payload_too_large")
    form = client.post(
        "/notes",
        body=b"note=" + b"x" * 3000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_json_error(form, 413, "payload_too_large")
    assert client.cookie is None


def test_chunked_body_within_the_limit_is_read(client):
    result = client.post(
        "/api/session/notes",
        body=b'{"note": "chunked"}',
        headers={"Content-Type": "application/json"},
        chunked=True,
    )
    assert result.status == 201
    assert result.json()["notes"] == ["chunked"]


def test_unknown_route_is_404_json(client):
    result = client.get("/no/such/page")
    assert_json_error(result, 404, "not_found", "GET /no/such/page")
    assert result.header("X-Served-By") == "test-app"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/api/session", "DELETE,GET"),
        ("GET", "/api/session/notes", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/", "GET"),
    ],
)
def test_wrong_method_is_405_json(client, method, path, allowed):
    result = client.request(method, path)
    assert_json_error(result, 405, "method_not_allowed", f"method {method} is not allowed")
    assert result.header("Allow") == allowed


def test_unexpected_error_is_500_json_without_traceback(client, monkeypatch):
    client.get("/")

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(SessionStore, "load", broken)
    result = client.get("/api/session")
    body = assert_json_error(result, 500, "internal_error")
    assert "secret internals" not in result.text
    assert body["message"] == "internal server error; the request id is in the server log"


# --- health, hello, io ------------------------------------------------------------------


def test_healthz(client):
    result = client.get("/healthz")
    assert result.status == 200
    assert result.json() == {"status": "ok"}


def test_readyz(client):
    result = client.get("/readyz")
    assert result.status == 200
    assert result.json() == {"status": "ok", "redis": "ok"}


def test_hello(client):
    result = client.get("/hello")
    assert result.status == 200
    assert result.header("Content-Type") == "text/plain; charset=utf-8"
    assert result.text == "hello from test-app\n"


def test_io_waits(client):
    result = client.get("/io?ms=30")
    assert result.status == 200
    assert result.json() == {"slept_ms": 30, "served_by": "test-app"}
    assert client.get("/io?ms=0").status == 200


@pytest.mark.parametrize(
    "query", ["", "?ms=", "?ms=-1", "?ms=2001", "?ms=abc", "?ms=1.5", "?ms=99999999"]
)
def test_io_out_of_range_is_400(client, query):
    assert_json_error(client.get(f"/io{query}"), 400, "invalid_parameter", "from 0 to 2000")


def test_events_stream_ticks_then_ends(client):
    started = time.monotonic()
    result = client.get("/events?every_ms=200&seconds=1")
    elapsed = time.monotonic() - started
    assert result.status == 200
    assert result.header("Content-Type") == "text/event-stream; charset=utf-8"
    assert result.header("Cache-Control") == "no-store"
    assert result.header("X-Accel-Buffering") == "no"
    assert result.header("Content-Length") is None
    events = parse_sse(result.text)
    assert events[0] == {"retry": "200"}
    ticks = [e for e in events[1:] if e.get("event") == "tick"]
    assert [e["id"] for e in ticks] == ["0", "1", "2", "3", "4"]
    assert next(json.loads(e["data"]) for e in ticks) == {"n": 0, "served_by": "test-app"}
    assert events[-1]["event"] == "end"
    assert json.loads(events[-1]["data"]) == {"events": 5, "seconds": 1, "served_by": "test-app"}
    assert 1.0 <= elapsed < 3  # the stream lasts `seconds`, no less


def test_events_defaults_when_parameters_are_absent(client, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(events_module.time, "sleep", slept.append)
    events = parse_sse(client.get("/events").text)
    assert events[0] == {"retry": "1000"}  # every_ms defaults to 1000
    assert json.loads(events[-1]["data"])["seconds"] == 30


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?every_ms=99", "from 100 to 60000"),
        ("?every_ms=60001", "from 100 to 60000"),
        ("?every_ms=abc", "from 100 to 60000"),
        ("?seconds=0", "from 1 to 600"),
        ("?seconds=601", "from 1 to 600"),
        ("?seconds=", "from 1 to 600"),
    ],
)
def test_events_out_of_range_is_400(client, query, message):
    assert_json_error(client.get(f"/events{query}"), 400, "invalid_parameter", message)


def test_cheap_endpoints_create_no_session(client, redis_admin):
    before = session_keys(redis_admin)
    for path in ("/healthz", "/readyz", "/hello", "/io?ms=0", "/api/session", "/nope"):
        result = client.get(path)
        assert result.session_cookie() is None, path
    assert session_keys(redis_admin) == before


# --- headers on every response ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/healthz"),
        ("GET", "/nope"),
        ("PUT", "/hello"),
        ("GET", "/io?ms=x"),
        ("GET", "/api/session"),
    ],
)
def test_every_response_has_served_by_and_request_id(client, method, path):
    kept = client.request(method, path, headers={"X-Request-ID": "req-123"})
    assert kept.header("X-Served-By") == "test-app"
    assert kept.header_all("X-Request-ID") == ["req-123"]
    generated = client.request(method, path)
    assert re.fullmatch(r"[0-9a-f]{32}", generated.header("X-Request-ID"))


def test_unusable_request_id_is_replaced(client):
    result = client.get("/hello", headers={"X-Request-ID": "has spaces and\ttabs"})
    assert re.fullmatch(r"[0-9a-f]{32}", result.header("X-Request-ID"))


# --- cookies ----------------------------------------------------------------------------


def cookie_flags(result) -> set[str]:
    return {part.strip() for part in result.header("Set-Cookie").split(";")[1:]}


def test_cookie_flags_plain_http(client):
    flags = cookie_flags(client.get("/"))
    assert {"HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=600"} <= flags
    assert "Secure" not in flags


def test_cookie_secure_over_direct_tls(make_app):
    client = WsgiClient(make_app(), scheme="https")
    assert "Secure" in cookie_flags(client.get("/"))


def test_cookie_secure_from_trusted_proxy_only(make_app):
    https = {"X-Forwarded-Proto": "https"}
    trusted = WsgiClient(make_app(WEBSTACK_TRUSTED_PROXIES="10.0.0.0/8"), remote_addr="10.1.2.3")
    assert "Secure" in cookie_flags(trusted.get("/", headers=https))
    assert "Secure" not in cookie_flags(trusted.get("/"))
    untrusted = WsgiClient(make_app(WEBSTACK_TRUSTED_PROXIES="10.0.0.0/8"), remote_addr="192.0.2.1")
    # gunicorn may already have set the scheme from the header (its own forwarded_allow_ips)
    untrusted.scheme = "https"
    assert "Secure" not in cookie_flags(untrusted.get("/", headers=https))


@pytest.mark.parametrize(("mode", "secure"), [("always", True), ("never", False)])
def test_cookie_secure_modes(make_app, mode, secure):
    client = WsgiClient(
        make_app(WEBSTACK_COOKIE_SECURE=mode), scheme="https" if not secure else "http"
    )
    assert ("Secure" in cookie_flags(client.get("/"))) is secure


def test_forged_cookie_gets_a_new_session(client, redis_admin):
    client.get("/")
    real = client.cookie
    forged = real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB")
    client.cookie = forged
    result = client.get("/")
    assert re.search(r'id="visits">1<', result.text)
    assert session_id_of(client.cookie) != session_id_of(real)


def test_forged_cookie_costs_no_redis_call(make_app):
    # Redis is unreachable here: only a cookie that verifies would need it.
    app = make_app(WEBSTACK_REDIS_ADDRESS=f"127.0.0.1:{free_port()}")
    forged = WsgiClient(app, cookie="webstack_session=" + "A" * 43 + "." + "B" * 43)
    assert forged.get("/api/session").status == 200
    genuine = WsgiClient(make_app(WEBSTACK_REDIS_ADDRESS=f"127.0.0.1:{free_port()}"))
    genuine.cookie = (
        WsgiClient(make_app()).post("/api/session/notes", json_body={"note": "n"}).session_cookie()
    )
    assert genuine.get("/api/session").status == 503


# --- Redis down -------------------------------------------------------------------------


def test_redis_unreachable_is_503_json_and_keeps_the_cookie(make_app):
    up = WsgiClient(make_app())
    up.post("/api/session/notes", json_body={"note": "kept"})
    down = WsgiClient(make_app(WEBSTACK_REDIS_ADDRESS=f"127.0.0.1:{free_port()}"), cookie=up.cookie)
    for method, path, kwargs in [
        ("GET", "/", {}),
        ("GET", "/api/session", {}),
        ("POST", "/api/session/notes", {"json_body": {"note": "x"}}),
        ("DELETE", "/api/session", {}),
        (
            "POST",
            "/notes",
            {"body": b"note=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        ),
    ]:
        result = down.request(method, path, **kwargs)
        assert_json_error(result, 503, "session_store_unavailable", "try again")
        assert result.header("Retry-After") == "1"
        assert result.header("Set-Cookie") is None, path
        assert down.cookie == up.cookie
    ready = down.get("/readyz")
    assert ready.status == 503
    assert ready.json() == {"status": "unavailable", "redis": "unreachable"}
    assert down.get("/healthz").status == 200
    assert down.get("/hello").status == 200
    assert up.get("/api/session").json()["notes"] == ["kept"]
