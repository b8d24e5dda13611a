"""Through the balancer, from a client: HTTPS to both app machines, redirects, TLS, headers."""

import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable

import pytest
import testinfra
from conftest import wait_until
from nginx_client import (
    APPS,
    CERT,
    LB,
    access_log_entry,
    get,
    https,
    request,
    tls_context,
)

testinfra_hosts = ["lb1"]

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


def test_https_reaches_both_app_machines() -> None:
    served_by = [get("/hello").served_by for _ in range(12)]
    assert set(served_by) == set(APPS), served_by


def test_http_redirects_to_https() -> None:
    conn = http.client.HTTPConnection(LB, 80, timeout=10)
    answer = request(conn, "/some/path?x=1")
    conn.close()
    assert answer.status == 301
    assert answer.headers["Location"] == f"https://{LB}/some/path?x=1"


def test_tls_is_modern_http2_and_our_certificate() -> None:
    context = tls_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection((LB, 443), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        served = ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
        names = [value for kind, value in tls.getpeercert()["subjectAltName"] if kind == "DNS"]
    assert served.strip() == CERT.read_text().strip()
    assert "webstack.test" in names


def old_client_context() -> ssl.SSLContext:
    """A client that may offer anything (old versions, weak ciphers): a refusal is the server's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("ALL:@SECLEVEL=0")
    return context


def handshake_refusal(context: ssl.SSLContext) -> str:
    """The reason the balancer gave for refusing the handshake (OpenSSL's name of its alert)."""
    with socket.create_connection((LB, 443), timeout=10) as raw:
        try:
            context.wrap_socket(raw).close()
        except ssl.SSLError as error:
            return error.reason or str(error)
    raise AssertionError("the handshake succeeded")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(version: ssl.TLSVersion) -> None:
    context = old_client_context()
    context.minimum_version = version
    context.maximum_version = version
    # The server answers with a protocol_version alert: not a failure on this client's side.
    assert handshake_refusal(context) == "TLSV1_ALERT_PROTOCOL_VERSION"


# TLS 1.2 suites outside Mozilla's intermediate list that the balancer's ECDSA certificate
# could otherwise serve: CBC with SHA-1 or SHA-2, and static-key suites without forward secrecy.
@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA256"]
)
def test_weak_tls12_ciphers_are_refused(cipher: str) -> None:
    context = old_client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(f"{cipher}:@SECLEVEL=0")
    assert handshake_refusal(context) == "SSLV3_ALERT_HANDSHAKE_FAILURE"


def test_the_same_client_with_a_modern_tls12_cipher_is_served() -> None:
    """The control of the two tests above: their client is refused for its offer only."""
    context = old_client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with socket.create_connection((LB, 443), timeout=10) as raw, context.wrap_socket(raw) as tls:
        assert tls.version() == "TLSv1.2"
        assert tls.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"


def test_response_headers() -> None:
    answer = get("/hello")
    assert answer.status == 200
    assert REQUEST_ID.match(answer.headers["X-Request-ID"]), answer.headers
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert answer.headers["Server"] == "nginx", "server_tokens off: no version"
    # The scenario turns HSTS on with a max-age of a day (molecule.yml).
    assert answer.headers["Strict-Transport-Security"] == "max-age=86400; includeSubDomains"


def test_request_id_and_client_address_reach_the_app_log(
    host: testinfra.host.Host, machine: Callable[[str], testinfra.host.Host]
) -> None:
    # The client's own X-Forwarded-For and X-Request-ID are not trusted at the edge.
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "client-made-id-1"}
    answer = get("/hello", headers=spoofed)
    assert answer.status == 200
    ids = answer.headers.get_all("X-Request-ID")
    assert len(ids) == 1 and REQUEST_ID.match(ids[0]), ids
    client = access_log_entry(host, ids[0])["client"]
    assert client != "203.0.113.9"
    # The app logs the client address it derives from X-Forwarded-For (the balancer is its
    # trusted proxy) and the request id it received: the same as the balancer's.
    app = machine(answer.served_by)
    line = ""
    for _ in range(20):
        line = app.run(f"journalctl -u webstack-app --no-pager -n 200 | grep -F {ids[0]}").stdout
        if line:
            break
        time.sleep(0.5)
    assert f'{client} "GET /hello" 200' in line, line or "request id not in the app's log"
    assert "203.0.113.9" not in line


def test_forwarded_proto_reaches_the_app() -> None:
    # The app marks its session cookie Secure only when its trusted proxy says "https".
    answer = get("/")
    assert answer.status == 200
    cookie = answer.headers["Set-Cookie"]
    assert "Secure" in cookie, cookie
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert len(answer.headers.get_all("X-Frame-Options")) == 1


def test_access_log_has_request_id_upstream_and_timings(host: testinfra.host.Host) -> None:
    request_id = get("/hello").headers["X-Request-ID"]
    entry = access_log_entry(host, request_id)
    assert entry["status"] == 200 and entry["tls"] in ("TLSv1.2", "TLSv1.3")
    assert entry["upstream_addr"] in {f"{address}:8000" for address in APPS.values()}
    assert entry["upstream_status"] == "200"
    assert float(entry["upstream_response_time"]) >= 0
    assert float(entry["upstream_connect_time"]) >= 0


def test_body_size_is_limited() -> None:
    conn = https()
    answer = request(conn, "/hello", method="POST", body=b"x" * (2 * 1024 * 1024))
    conn.close()
    assert answer.status == 413
    answer.nginx_error("payload_too_large")


# nginx_upstream_keepalive_timeout of the role; the scenario gives gunicorn a keep-alive of
# 20 s (app_keepalive in molecule.yml), so within this test only nginx closes idle connections.
UPSTREAM_IDLE_TIMEOUT = 4.0
APP_KEEPALIVE = 20.0


def upstream_sockets(host: testinfra.host.Host, state: str) -> set[tuple[str, str]]:
    """(local, peer) address pairs of lb1's sockets to the apps' port 8000 in a TCP state."""
    out = host.run(f"ss -Htn state {state} '( dport = :8000 )'").stdout
    return {tuple(line.split()[-2:]) for line in out.splitlines() if line.strip()}


def test_upstream_connections_are_kept_alive_then_closed_by_nginx(
    host: testinfra.host.Host,
) -> None:
    # Earlier tests' idle connections go first, so that every one open below is this test's.
    idle = wait_until(lambda: not upstream_sockets(host, "established"), timeout=APP_KEEPALIVE)
    assert idle is not None, "upstream connections of earlier tests are never closed"
    conn = https()
    for _ in range(10):
        assert request(conn, "/hello").status == 200
    conn.close()
    last_request = time.monotonic()
    kept = upstream_sockets(host, "established")
    assert 1 <= len(kept) <= 4, f"{len(kept)} upstream connections for 10 requests: {kept}"
    # Still open halfway to nginx's idle timeout: kept alive, not closed after each request.
    time.sleep(UPSTREAM_IDLE_TIMEOUT / 2)
    assert kept <= upstream_sockets(host, "established"), "closed before the idle timeout"
    gone = wait_until(
        lambda: not kept & upstream_sockets(host, "established"), timeout=APP_KEEPALIVE
    )
    closed_after = time.monotonic() - last_request
    print(f"\n{len(kept)} idle upstream connections closed {closed_after:.1f}s after use")
    assert gone is not None, f"still open after {APP_KEEPALIVE}s: {kept}"
    # nginx closes them after its idle timeout (checked to the second), well before gunicorn's.
    assert UPSTREAM_IDLE_TIMEOUT - 0.5 <= closed_after <= UPSTREAM_IDLE_TIMEOUT + 2.5, closed_after
    # The side that closes first keeps the connection in TIME_WAIT (60 s): lb1, not the app.
    closed_by_lb1 = wait_until(lambda: kept <= upstream_sockets(host, "time-wait"), timeout=3)
    assert closed_by_lb1 is not None, f"lb1 did not close them first: {kept}"


def test_app_metrics_are_not_served_to_clients(host: testinfra.host.Host) -> None:
    for path in ("/metrics", "/metrics?format=x", "/metrics/", "/metrics/a/b", "//metrics"):
        answer = get(path)
        assert answer.status == 404, f"{path}: {answer.status}"
        assert answer.served_by is None, f"{path} reached {answer.served_by}"
        answer.nginx_error("not_found")
        entry = access_log_entry(host, answer.headers["X-Request-ID"])
        assert entry["upstream_addr"] in ("", "-", None), entry
    # Only the balancer refuses it: each app machine serves it on its own port.
    for name, address in APPS.items():
        conn = http.client.HTTPConnection(address, 8000, timeout=10)
        answer = request(conn, "/metrics")
        conn.close()
        assert answer.status == 200, f"{name}: {answer.status}"
        assert answer.served_by == name
        assert b"\nwebstack_http_requests_total{" in answer.body
