"""Through the balancer, from a client: HTTPS to both app machines, redirects, TLS, headers."""

import http.client
import json
import re
import socket
import ssl
import time

import pytest
import testinfra
from nginx_client import APPS, CERT, LB, get, https, machine_host, request, tls_context

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


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused(version: ssl.TLSVersion) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Let this client offer the old version, so a failure is the server's refusal.
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    with socket.create_connection((LB, 443), timeout=10) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw)


def test_response_headers() -> None:
    answer = get("/hello")
    assert answer.status == 200
    assert REQUEST_ID.match(answer.headers["X-Request-ID"]), answer.headers
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert answer.headers["Server"] == "nginx", "server_tokens off: no version"
    assert "Strict-Transport-Security" not in answer.headers, "HSTS is off by default"


def access_log_entry(host: testinfra.host.Host, request_id: str) -> dict:
    """The balancer's access log line of a request (the log is flushed every second)."""
    for _ in range(20):
        found = host.run(f"grep -F {request_id} /var/log/nginx/access.log").stdout
        if found:
            return json.loads(found.splitlines()[-1])
        time.sleep(0.5)
    raise AssertionError(f"request id {request_id} not in the balancer's access log")


def test_request_id_and_client_address_reach_the_app_log(host: testinfra.host.Host) -> None:
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
    app = machine_host(answer.served_by)
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


def test_proxy_settings_towards_the_app(host: testinfra.host.Host) -> None:
    config = host.run("nginx -T").stdout
    for directive in (
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header Host $host;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $host;",
        "proxy_set_header X-Request-ID $webstack_request_id;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "proxy_next_upstream_tries 3;",
        "proxy_next_upstream_timeout 10s;",
    ):
        assert directive in config


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


def test_upstream_connections_are_kept_alive_then_closed_before_the_app_would(
    host: testinfra.host.Host,
) -> None:
    def upstream_connections() -> int:
        out = host.run("ss -Htn state established '( dport = :8000 )'").stdout
        return len(out.splitlines())

    conn = https()
    for _ in range(10):
        assert request(conn, "/hello").status == 200
    conn.close()
    kept = upstream_connections()
    assert kept >= 1, "no idle upstream connection kept"
    assert kept <= 4, f"{kept} upstream connections for 10 sequential requests: not reused"
    time.sleep(6)  # nginx_upstream_keepalive_timeout is 4s
    assert upstream_connections() == 0


def test_app_metrics_are_not_served_to_clients(host: testinfra.host.Host) -> None:
    for path in ("/metrics", "/metrics?format=x", "/metrics/", "/metrics/a/b", "//metrics"):
        answer = get(path)
        assert answer.status == 404, f"{path}: {answer.status}"
        assert answer.served_by is None, f"{path} reached {answer.served_by}"
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
