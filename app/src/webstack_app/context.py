"""What the routes share: the settings and the objects built from them, one set per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bottle import request, response

from webstack_app.config import Settings
from webstack_app.cookies import SessionCookie
from webstack_app.metrics import AppMetrics
from webstack_app.proxies import TrustedProxies
from webstack_app.sessions import SessionData, SessionStore
from webstack_app.store import RedisProvider


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    proxies: TrustedProxies
    cookie: SessionCookie
    redis: RedisProvider
    sessions: SessionStore
    metrics: AppMetrics

    @classmethod
    def from_settings(cls, settings: Settings) -> AppContext:
        redis = RedisProvider(settings)
        return cls(
            settings=settings,
            proxies=TrustedProxies(settings.trusted_proxies),
            cookie=SessionCookie(settings.secret_key, settings.session_ttl),
            redis=redis,
            sessions=SessionStore(
                redis,
                settings.key_prefix,
                settings.session_ttl,
                wait_replicas=settings.redis_wait_replicas,
                wait_timeout=settings.redis_wait_timeout,
            ),
            metrics=AppMetrics(settings.metrics_dir),
        )

    def session_id(self) -> str | None:
        """The current request's verified session id, if it sent one; no Redis involved."""
        return self.cookie.session_id_from(request.environ.get("HTTP_COOKIE", ""))

    def change_session(self, change: Callable[[SessionData], None]) -> tuple[str, SessionData]:
        """Apply `change` to the request's session; the session id and data it now has.

        A session that Redis no longer holds (expired, deleted, never made) is not revived
        under the id the client sent: it starts under a new id, so an id someone else knows
        (a planted cookie, a logged-out one) never becomes a live session (fixation).
        """
        session_id = self.session_id()
        if session_id is not None:
            data = self.sessions.update_existing(session_id, change)
            if data is not None:
                return session_id, data
        session_id = self.cookie.new_id()
        return session_id, self.sessions.update(session_id, change)

    def cookie_is_secure(self) -> bool:
        mode = self.settings.cookie_secure
        if mode == "auto":
            return self.proxies.is_tls(request.environ)
        return mode == "always"

    def remember_session(self, session_id: str) -> None:
        """Send the session cookie (again: its Max-Age slides with the Redis TTL)."""
        header = self.cookie.set_cookie_header(session_id, secure=self.cookie_is_secure())
        response.add_header("Set-Cookie", header)

    def forget_session(self) -> None:
        response.add_header(
            "Set-Cookie", self.cookie.clear_cookie_header(secure=self.cookie_is_secure())
        )

    def session_document(self, data: SessionData) -> dict[str, Any]:
        """The JSON API's view of a session."""
        return {
            "visits": data.visits,
            "notes": list(data.notes),
            "served_by": self.settings.instance_name,
        }
