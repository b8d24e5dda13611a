"""What the request's forwarding headers may be believed about: scheme and client address.

X-Forwarded-Proto and X-Forwarded-For are believed only when the direct peer (REMOTE_ADDR)
is one of WEBSTACK_TRUSTED_PROXIES; from anyone else they are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from webstack_app.config import Network

# Headers gunicorn itself may turn into wsgi.url_scheme (its `secure_scheme_headers`), with
# its own trust list (`forwarded_allow_ips`, 127.0.0.1 by default). When one of them is
# present, wsgi.url_scheme may come from a header rather than the connection.
_SCHEME_HEADERS = ("HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PROTOCOL", "HTTP_X_FORWARDED_SSL")


class TrustedProxies:
    """The set of peers whose X-Forwarded-* headers are believed."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self._networks = tuple(networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str) or not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self._networks)

    def is_tls(self, environ: Mapping[str, Any]) -> bool:
        """Whether the client's request reached us over TLS.

        From a trusted peer: what its X-Forwarded-Proto says (the last value, the one the
        nearest proxy set). Otherwise: the connection's own scheme, unless a forwarding
        header is present, in which case the server may have taken its scheme from that
        header and it is not believed.
        """
        forwarded_proto = environ.get("HTTP_X_FORWARDED_PROTO", "")
        if forwarded_proto and environ.get("REMOTE_ADDR") in self:
            return _last(forwarded_proto).lower() == "https"
        if any(environ.get(name) for name in _SCHEME_HEADERS):
            return False
        return environ.get("wsgi.url_scheme") == "https"

    def client_address(self, environ: Mapping[str, Any]) -> str:
        """The client's address: X-Forwarded-For walked from the right past trusted proxies."""
        peer = str(environ.get("REMOTE_ADDR") or "-")
        if peer not in self:
            return peer
        hops = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        for hop in reversed([h for h in hops if h]):
            if hop not in self:
                return hop
        return peer


def _last(header_value: str) -> str:
    return header_value.rsplit(",", 1)[-1].strip()
