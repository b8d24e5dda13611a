"""Writes from other sites are refused (403), whatever cookie they carry.

SameSite=Lax keeps the session cookie off a cross-site POST, but the POST itself would still
be served: a form on any site could add notes to a fresh session or fill Redis. A browser says
where a request comes from: `Sec-Fetch-Site` (every current browser), else `Origin`. A write
(any method but GET, HEAD and OPTIONS) is served when it comes from this site
(`same-origin`), from the user (`none`: typed or bookmarked), or from a client that sends
neither header (curl, scripts, the tests: no browser, so no other site can make it send
anything). `Origin` is compared by host name with the request's Host, which the balancer
passes on as the name the client asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from bottle import request

from webstack_app.errors import json_error

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SERVED_FETCH_SITES = frozenset({"same-origin", "none"})


def _host_name(value: str) -> str:
    """The host name of a Host header value ("example.com:8443" -> "example.com")."""
    return (urlsplit(f"//{value}").hostname or "").lower()


def refusal(environ: dict) -> str | None:
    """Why this request is a cross-site write, or None when it may be served."""
    if environ.get("REQUEST_METHOD", "GET").upper() in _SAFE_METHODS:
        return None
    fetch_site = environ.get("HTTP_SEC_FETCH_SITE", "").strip().lower()
    if fetch_site:
        return None if fetch_site in _SERVED_FETCH_SITES else f"Sec-Fetch-Site: {fetch_site}"
    origin = environ.get("HTTP_ORIGIN")
    if origin is None:
        return None
    origin_host = (urlsplit(origin.strip()).hostname or "").lower()
    if origin_host and origin_host == _host_name(environ.get("HTTP_HOST", "")):
        return None
    return f"Origin: {origin.strip()[:100]}"


def refuse_cross_site_writes() -> Callable[[], None]:
    """A before_request hook: 403 `cross_site_request` for a write another site sent."""

    def hook() -> None:
        reason = refusal(request.environ)
        if reason is not None:
            raise json_error(
                403,
                "cross_site_request",
                f"a write from another site is refused ({reason}); send it from this site",
            )

    return hook
