"""#17 item 9: a session id is never revived, other sites cannot write, HEAD changes nothing."""

from __future__ import annotations

import pytest

from support import KEY_PREFIX, session_id_of, session_keys

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def key_of(cookie: str) -> str:
    return f"{KEY_PREFIX}:session:{session_id_of(cookie)}"


# --- a session id that Redis no longer holds is never used again (fixation) --------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/api/session/notes", {"json_body": {"note": "after"}}),
        ("POST", "/notes", {"body": b"note=after", "headers": FORM}),
        ("GET", "/", {}),
    ],
    ids=["api note", "form note", "page visit"],
)
def test_a_write_to_a_deleted_session_starts_a_new_id(client, redis_admin, method, path, kwargs):
    client.post("/api/session/notes", json_body={"note": "before"})
    old = client.cookie
    assert client.delete("/api/session").status == 200
    client.cookie = old  # the old cookie, kept or planted: its MAC still verifies
    result = client.request(method, path, **kwargs)
    assert result.status in (200, 201, 303), result.text
    assert client.cookie is not None
    assert session_id_of(client.cookie) != session_id_of(old)
    assert not redis_admin.exists(key_of(old)), "the deleted session's id was revived"
    assert redis_admin.exists(key_of(client.cookie))


def test_a_write_to_a_live_session_keeps_its_id(client, redis_admin):
    client.post("/api/session/notes", json_body={"note": "one"})
    first = client.cookie
    added = client.post("/api/session/notes", json_body={"note": "two"})
    assert added.json()["notes"] == ["one", "two"]
    assert session_id_of(client.cookie) == session_id_of(first)


# --- writes from other sites are refused ------------------------------------------------

CROSS_SITE = {
    "Sec-Fetch-Site cross-site": {"Sec-Fetch-Site": "cross-site"},
    "Sec-Fetch-Site same-site (a sibling host)": {"Sec-Fetch-Site": "same-site"},
    "Origin of another host": {"Origin": "https://evil.example", "Host": "shop.example"},
    "Origin null (a sandboxed page)": {"Origin": "null", "Host": "shop.example"},
}
SAME_SITE = {
    "Sec-Fetch-Site same-origin": {"Sec-Fetch-Site": "same-origin"},
    "Sec-Fetch-Site none (typed by the user)": {"Sec-Fetch-Site": "none"},
    "Origin of this host": {"Origin": "https://shop.example", "Host": "shop.example"},
    "Origin of this host, the Host with a port": {
        "Origin": "https://shop.example:8443",
        "Host": "shop.example:8443",
    },
    "no browser headers (curl, scripts)": {},
}
WRITES = [
    ("POST", "/notes", {"body": b"note=x", "headers": dict(FORM)}),
    ("POST", "/api/session/notes", {"json_body": {"note": "x"}}),
    ("DELETE", "/api/session", {}),
]


@pytest.mark.parametrize("headers", CROSS_SITE.values(), ids=CROSS_SITE.keys())
@pytest.mark.parametrize(("method", "path", "kwargs"), WRITES, ids=[w[1] for w in WRITES])
def test_a_cross_site_write_is_refused_and_changes_nothing(
    client, redis_admin, headers, method, path, kwargs
):
    client.post("/api/session/notes", json_body={"note": "mine"})
    mine, before = client.cookie, session_keys(redis_admin)
    kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **headers}}
    refused = client.request(method, path, **kwargs)
    assert refused.status == 403, refused.text
    assert refused.json()["error"] == "cross_site_request"
    assert refused.session_cookie() is None
    assert session_keys(redis_admin) == before
    assert client.cookie == mine
    assert client.get("/api/session").json()["notes"] == ["mine"]


@pytest.mark.parametrize("headers", SAME_SITE.values(), ids=SAME_SITE.keys())
@pytest.mark.parametrize(("method", "path", "kwargs"), WRITES, ids=[w[1] for w in WRITES])
def test_a_write_from_this_site_is_served(client, headers, method, path, kwargs):
    kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **headers}}
    assert client.request(method, path, **kwargs).status in (200, 201, 303)


def test_a_cross_site_read_is_served(client):
    # Reads change nothing (and SameSite=Lax keeps the cookie off cross-site subrequests).
    assert client.get("/hello", headers={"Sec-Fetch-Site": "cross-site"}).status == 200


# --- HEAD runs no writing handler ------------------------------------------------------


def test_head_of_the_page_writes_nothing(client, redis_admin):
    before = session_keys(redis_admin)
    head = client.request("HEAD", "/")
    assert head.status == 200
    assert head.session_cookie() is None
    assert session_keys(redis_admin) == before
    client.get("/")
    stored = redis_admin.get(key_of(client.cookie))
    assert client.request("HEAD", "/").status == 200
    assert redis_admin.get(key_of(client.cookie)) == stored  # no visit counted
