"""Client side of the nginx scenario: the controller talks to the balancer like a browser.

The controller sits on the scenario's network (10.78.4.0/24), so it is the client machine:
it reaches lb1 over HTTP and HTTPS the way a browser would, and only lb1.
"""

import contextlib
import http.client
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import testinfra
from conftest import addresses

# The balancer and the app machines, with their addresses from the scenario's inventory.
LB = addresses()["lb1"]
APPS = {name: addresses()[name] for name in ("app1", "app2")}
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).parents[3]))
# The self-signed certificate the role made on the controller: the client trusts only it.
CERT = PROJECT / ".cache" / "nginx-tls" / "webstack.crt"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def served_by(self) -> str | None:
        return self.headers.get("X-Served-By")

    def json(self) -> dict:
        return json.loads(self.body)

    def nginx_error(self, code: str) -> None:
        """Asserts this is one of nginx's own errors in the app's JSON shape (errors.py)."""
        assert self.headers.get("Content-Type") == "application/json", (self.status, self.body)
        body = self.json()
        assert body["error"] == code and body["message"], body
        assert body["request_id"] == self.headers["X-Request-ID"], body


def tls_context() -> ssl.SSLContext:
    """Trusts the balancer's certificate only; the name is not checked (we dial an address)."""
    context = ssl.create_default_context(cafile=str(CERT))
    context.check_hostname = False
    return context


def https(timeout: float = 10) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(LB, 443, timeout=timeout, context=tls_context())


def request(
    conn: http.client.HTTPConnection,
    path: str = "/hello",
    method: str = "GET",
    headers: dict | None = None,
    body: bytes | None = None,
) -> Answer:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return Answer(response.status, response.headers, response.read())


def get(path: str = "/hello", headers: dict | None = None) -> Answer:
    conn = https()
    try:
        return request(conn, path, headers=headers)
    finally:
        conn.close()


class Loop(threading.Thread):
    """GETs through the balancer every `interval` seconds until stopped; records each outcome."""

    def __init__(self, path: str = "/hello", interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.path, self.interval = path, interval
        self.outcomes: list[tuple[int | str, str | None, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                answer = get(self.path)
                outcome = (answer.status, answer.served_by, time.monotonic() - started)
            except (OSError, http.client.HTTPException) as error:
                outcome = (f"{type(error).__name__}: {error}", None, time.monotonic() - started)
            self.outcomes.append(outcome)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)

    @property
    def failures(self) -> list:
        return [o for o in self.outcomes if o[0] != 200]


def wait_until_both_apps_serve(timeout: float = 120) -> set:
    seen: set = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            seen.add(get().served_by)
        if set(APPS) <= seen:
            return seen
        time.sleep(0.3)
    return seen


def access_log_entry(host: testinfra.host.Host, request_id: str) -> dict:
    """The balancer's access log line of a request (the log is flushed every second)."""
    for _ in range(20):
        found = host.run(f"grep -F {request_id} /var/log/nginx/access.log").stdout
        if found:
            return json.loads(found.splitlines()[-1])
        time.sleep(0.5)
    raise AssertionError(f"request id {request_id} not in the balancer's access log")
