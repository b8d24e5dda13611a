"""The session cookie: a random session id with an HMAC of it, keyed by WEBSTACK_SECRET_KEY.

The cookie's value is `<id>.<mac>`: `id` is secrets.token_urlsafe(32) (256 random bits) and
`mac` is HMAC-SHA256(secret key, id), base64url. The id alone already cannot be guessed; the
MAC lets every app machine reject an invented or altered id without asking Redis, so junk
cookies cost no Redis round trip and cannot be used to probe the key space. The MAC does not
hide the id and does not expire: expiry is the Redis key's sliding TTL. Changing the secret
key logs every user out (their cookies no longer verify).

Attributes: HttpOnly (no script access), SameSite=Lax (not sent on cross-site POSTs, which
is the CSRF defence for the form and the API), Path=/, Max-Age = the session TTL, renewed on
every response that touched the session, and Secure when the request came over TLS (see
proxies.TrustedProxies.is_tls) or when WEBSTACK_COOKIE_SECURE says always.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

COOKIE_NAME = "webstack_session"
_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32): 32 bytes, 43 base64url chars
_MAC_CONTEXT = b"webstack-session-id:v1:"


class SessionCookie:
    """Issues, verifies and builds the Set-Cookie header of session cookies."""

    def __init__(self, secret_key: str, max_age: int) -> None:
        self._key = hashlib.sha256(b"webstack-cookie-key:" + secret_key.encode()).digest()
        self._max_age = max_age

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(32)

    def _mac(self, session_id: str) -> str:
        digest = hmac.new(self._key, _MAC_CONTEXT + session_id.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def value_for(self, session_id: str) -> str:
        return f"{session_id}.{self._mac(session_id)}"

    def verify(self, value: str) -> str | None:
        """The session id in a cookie value, or None if it is malformed or its MAC is wrong."""
        session_id, sep, mac = value.partition(".")
        if not sep or not _ID_RE.fullmatch(session_id):
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(session_id).encode()):
            return None
        return session_id

    def session_id_from(self, cookie_header: str) -> str | None:
        """The first verified session id among the Cookie header's session cookies."""
        for part in cookie_header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name == COOKIE_NAME:
                session_id = self.verify(value.strip().strip('"'))
                if session_id:
                    return session_id
        return None

    def set_cookie_header(self, session_id: str, *, secure: bool) -> str:
        return self._header(self.value_for(session_id), self._max_age, secure=secure)

    def clear_cookie_header(self, *, secure: bool) -> str:
        return self._header("", 0, secure=secure)

    @staticmethod
    def _header(value: str, max_age: int, *, secure: bool) -> str:
        attributes = [f"{COOKIE_NAME}={value}", "Path=/", f"Max-Age={max_age}"]
        if max_age == 0:
            attributes.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        attributes += ["HttpOnly", "SameSite=Lax"]
        if secure:
            attributes.append("Secure")
        return "; ".join(attributes)
