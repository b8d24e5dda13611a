"""The session cookie's MAC and attributes; which forwarding headers are believed."""

from __future__ import annotations

import ipaddress

import pytest

from webstack_app.cookies import COOKIE_NAME, SessionCookie
from webstack_app.proxies import TrustedProxies

cookie = SessionCookie("k" * 32, max_age=600)


def test_new_ids_are_256_bit_and_unique():
    ids = {SessionCookie.new_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 43 for i in ids)  # 32 bytes, base64url without padding


def test_signed_value_verifies():
    session_id = SessionCookie.new_id()
    assert cookie.verify(cookie.value_for(session_id)) == session_id


@pytest.mark.parametrize(
    "mangle",
    [
        lambda v: v.replace(v[0], "A" if v[0] != "A" else "B", 1),  # id changed
        lambda v: v[:-1] + ("A" if v[-1] != "A" else "B"),  # mac changed
        lambda v: v.split(".")[0],  # no mac
        lambda v: v + "x",
        lambda v: "../../etc/passwd." + v.split(".")[1],
        lambda v: "",
    ],
)
def test_forged_or_altered_values_are_rejected(mangle):
    value = cookie.value_for(SessionCookie.new_id())
    assert cookie.verify(mangle(value)) is None


def test_another_secret_rejects_the_cookie():
    value = cookie.value_for(SessionCookie.new_id())
    assert SessionCookie("z" * 32, max_age=600).verify(value) is None


def test_session_id_from_cookie_header_among_others():
    session_id = SessionCookie.new_id()
    header = f"theme=dark; {COOKIE_NAME}=bogus.value; {COOKIE_NAME}={cookie.value_for(session_id)}"
    assert cookie.session_id_from(header) == session_id
    assert cookie.session_id_from("theme=dark") is None
    assert cookie.session_id_from("") is None


def test_set_cookie_attributes():
    header = cookie.set_cookie_header("x" * 43, secure=False)
    parts = header.split("; ")
    assert parts[0].startswith(f"{COOKIE_NAME}={'x' * 43}.")
    assert set(parts[1:]) == {"Path=/", "Max-Age=600", "HttpOnly", "SameSite=Lax"}
    assert cookie.set_cookie_header("x" * 43, secure=True).endswith("; Secure")
    cleared = cookie.clear_cookie_header(secure=False)
    assert cleared.startswith(f"{COOKIE_NAME}=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970")


proxies = TrustedProxies([ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1")])


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_PROTO": "https"}, True),
        ({"REMOTE_ADDR": "::1", "HTTP_X_FORWARDED_PROTO": "HTTPS"}, True),
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_PROTO": "http"}, False),
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_PROTO": "http, https"}, True),
        ({"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_PROTO": "https, http"}, False),
        # untrusted peers: the header is ignored, and so is a scheme the server derived from it
        ({"REMOTE_ADDR": "10.0.1.5", "HTTP_X_FORWARDED_PROTO": "https"}, False),
        (
            {
                "REMOTE_ADDR": "10.0.1.5",
                "HTTP_X_FORWARDED_PROTO": "https",
                "wsgi.url_scheme": "https",
            },
            False,
        ),
        (
            {"REMOTE_ADDR": "10.0.1.5", "HTTP_X_FORWARDED_SSL": "on", "wsgi.url_scheme": "https"},
            False,
        ),
        # no forwarding headers: the connection's own scheme
        ({"REMOTE_ADDR": "10.0.1.5", "wsgi.url_scheme": "https"}, True),
        ({"REMOTE_ADDR": "10.0.1.5", "wsgi.url_scheme": "http"}, False),
        ({"REMOTE_ADDR": "not-an-ip", "HTTP_X_FORWARDED_PROTO": "https"}, False),
    ],
)
def test_is_tls(environ, expected):
    assert proxies.is_tls(environ) is expected


def test_client_address():
    forwarded = "203.0.113.9, 198.51.100.7, 10.0.0.9"
    assert proxies.client_address(
        {"REMOTE_ADDR": "10.0.0.5", "HTTP_X_FORWARDED_FOR": forwarded}
    ) == ("198.51.100.7")
    assert proxies.client_address(
        {"REMOTE_ADDR": "192.0.2.1", "HTTP_X_FORWARDED_FOR": forwarded}
    ) == ("192.0.2.1")
    assert proxies.client_address({"REMOTE_ADDR": "10.0.0.5"}) == "10.0.0.5"
    assert TrustedProxies([]).client_address({"REMOTE_ADDR": "10.0.0.5"}) == "10.0.0.5"
