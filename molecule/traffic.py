"""The traffic of the failure drills and of the app's deploys: paced GETs and POSTs through one
URL base, some over keep-alive connections, from a lab machine, counting what a user would see.

Two halves in one file. Run as a script on a lab machine (standard library only: the lab's
client has nothing else), it loops until SIGTERM and writes a JSON report:

    python3 traffic.py BASE_URL REPORT [--get /hello[,/io?ms=300,...]] [--post /api/session/notes]
        [--cookie C] [--threads 4] [--keepalive 2] [--interval 0.1] [--post-interval 0.5]
        [--timeout 3] [--max-seconds 300]

GET thread N asks the Nth path of --get (round robin). Imported by the tests, `Traffic` copies
this file onto a machine, runs it there under systemd-run for as long as a `with` block lasts,
and reads the report back; the app scenario's side effect runs it the same way from Ansible.

What counts: an answer 2xx-4xx is an answer (its status counted in `statuses`; 429 is the
rate limit, not a failure); a 5xx, a refused or reset connection or no answer within the
timeout is a failure (`errors` names them). `longest_gap` is the longest time, across all
threads, without any successful (2xx) answer. A keep-alive thread looks at its idle
connection before it reuses it and opens a new one if the server has closed it meanwhile (a
reload of nginx closes idle connections), as urllib3 and browsers do: counted in
`idle_closed`, nothing was sent on it. One whose connection dies anyway before any byte of an
answer (closed while the request was on its way, or the balancer behind the VIP changed)
sends its GET again once on a new connection, as browsers and HTTP libraries do; those are
counted in `reconnects`. POSTs are never sent twice: each goes once, and one whose answer is
lost after it was sent (timeout, reset) is counted in `posts_unknown`: it may or may not have
been applied, so a server-side count of applied POSTs must lie between `posts_ok` and
`posts_ok + posts_unknown + posts_failed_5xx`.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import select
import signal
import ssl
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

REMOTE_PATH = "/usr/local/bin/webstack_traffic.py"


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.successes: list[float] = []
        self.failures_at: list[float] = []
        self.requests = {"GET": 0, "POST": 0}
        self.failures = {"GET": 0, "POST": 0}
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.served_by: dict[str, int] = {}
        self.reconnects = self.idle_closed = 0
        self.posts_ok = self.posts_unknown = self.posts_failed_5xx = 0

    def answered(self, method: str, status: int, server: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.requests[method] += 1
            self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
            if status >= 500:
                self.failures[method] += 1
                self.failures_at.append(now)
                self.errors[f"HTTP {status}"] = self.errors.get(f"HTTP {status}", 0) + 1
                if method == "POST":
                    self.posts_failed_5xx += 1
                return
            if 200 <= status < 300:
                self.successes.append(now)
                self.served_by[server] = self.served_by.get(server, 0) + 1
                if method == "POST":
                    self.posts_ok += 1

    def failed(self, method: str, error: BaseException) -> None:
        with self.lock:
            self.requests[method] += 1
            self.failures[method] += 1
            self.failures_at.append(time.monotonic())
            reason = type(error).__name__
            self.errors[reason] = self.errors.get(reason, 0) + 1
            if method == "POST":
                self.posts_unknown += 1


class _Client:
    """One thread's connection: kept alive between requests, or new for each."""

    def __init__(self, base: urllib.parse.SplitResult, timeout: float, keepalive: bool) -> None:
        self.base = base
        self.timeout = timeout
        self.keepalive = keepalive
        self.connection: http.client.HTTPConnection | None = None
        self.idle_closed = 0
        # The lab's certificate is self-signed: this client checks availability, not identity.
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def _connect(self) -> http.client.HTTPConnection:
        host = self.base.hostname or ""
        if self.base.scheme == "https":
            return http.client.HTTPSConnection(
                host, self.base.port or 443, timeout=self.timeout, context=self.context
            )
        return http.client.HTTPConnection(host, self.base.port or 80, timeout=self.timeout)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
        """(status, X-Served-By) of one request; raises on no answer. A GET on a reused
        connection that dies before any answer byte is sent again once on a new one."""
        if self.connection is not None and _closed_by_server(self.connection):
            self.idle_closed += 1
            self.close()
        reused = self.connection is not None
        if self.connection is None:
            self.connection = self._connect()
        headers = {**headers, "Connection": "keep-alive" if self.keepalive else "close"}
        try:
            self.connection.request(method, path, body=body, headers=headers)
            reply = self.connection.getresponse()
            reply.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if not (reused and method == "GET"):
                raise
            return None  # the caller counts a reconnect and sends it again
        except BaseException:
            self.close()
            raise
        if not self.keepalive or reply.will_close:
            self.close()
        return reply.status, reply.headers.get("X-Served-By", "?")


def _closed_by_server(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive connection is readable only if the server has closed it (its FIN,
    TLS close_notify or reset is waiting): no request may be sent on it."""
    if connection.sock is None:
        return True
    readable, _, _ = select.select([connection.sock], [], [], 0)
    return bool(readable)


def _loop(
    args: argparse.Namespace, stats: _Stats, method: str, keepalive: bool, path: str, stop
) -> None:
    base = urllib.parse.urlsplit(args.base)
    client = _Client(base, args.timeout, keepalive)
    headers = {"Cookie": args.cookie} if args.cookie else {}
    if method == "POST":
        interval = args.post_interval
        headers["Content-Type"] = "application/json"
    else:
        interval = args.interval
    number = 0
    while not stop.is_set():
        started = time.monotonic()
        number += 1
        body = json.dumps({"note": f"drill {number}"}).encode() if method == "POST" else None
        try:
            answer = client.request(method, path, headers, body)
            if answer is None:
                with stats.lock:
                    stats.reconnects += 1
                answer = client.request(method, path, headers, body)
            if answer is None:
                raise ConnectionResetError("reset on a new connection")
            stats.answered(method, *answer)
        except (OSError, http.client.HTTPException, ssl.SSLError) as error:
            stats.failed(method, error)
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    client.close()
    with stats.lock:
        stats.idle_closed += client.idle_closed


def _report(stats: _Stats, start: float, end: float, deadline: bool) -> dict[str, Any]:
    marks = [start, *sorted(stats.successes), end]
    gap = max(later - earlier for earlier, later in itertools.pairwise(marks))
    last_failure = max(stats.failures_at, default=start)
    first_failure = min(stats.failures_at, default=end)
    return {
        # Wall-clock times (Unix seconds) of the loop's start and end, to compare with others
        # (systemd's start time of a service).
        "began": round(time.time() - (time.monotonic() - start), 3),
        "ended": round(time.time() - (time.monotonic() - end), 3),
        "stopped_by_deadline": deadline,
        "seconds": round(end - start, 2),
        "requests": sum(stats.requests.values()),
        "failures": sum(stats.failures.values()),
        "gets": stats.requests["GET"],
        "get_failures": stats.failures["GET"],
        "posts": stats.requests["POST"],
        "post_failures": stats.failures["POST"],
        "posts_ok": stats.posts_ok,
        "posts_unknown": stats.posts_unknown,
        "posts_failed_5xx": stats.posts_failed_5xx,
        "statuses": stats.statuses,
        "errors": stats.errors,
        "served_by": stats.served_by,
        "reconnects": stats.reconnects,
        "idle_closed": stats.idle_closed,
        "longest_gap": round(gap, 2),
        "failing_for": round(max(0.0, last_failure - first_failure), 2),
        "ok_for_last": round(end - last_failure, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base", help="scheme://host[:port], e.g. https://10.79.0.100")
    parser.add_argument("report")
    parser.add_argument("--get", default="/hello", help="paths of the GETs, comma-separated")
    parser.add_argument("--post", default="", help="path of the POSTs (none when empty)")
    parser.add_argument("--cookie", default="")
    parser.add_argument("--threads", type=int, default=4, help="GET threads")
    parser.add_argument(
        "--keepalive", type=int, default=2, help="of them on kept-alive connections"
    )
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between a thread's GETs"
    )
    parser.add_argument("--post-interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=3.0, help="the user's patience, seconds")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stats = _Stats()
    paths = args.get.split(",")
    loops = [
        ("GET", number < args.keepalive, paths[number % len(paths)])
        for number in range(args.threads)
    ]
    if args.post:
        loops.append(("POST", True, args.post))
    threads = [
        threading.Thread(target=_loop, args=(args, stats, *loop, stop), daemon=True)
        for loop in loops
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    deadline = not stop.wait(args.max_seconds)
    stop.set()
    end = time.monotonic()
    for thread in threads:
        thread.join(args.timeout + 2)
    Path(args.report).write_text(json.dumps(_report(stats, start, end, deadline)))


class Traffic:
    """Runs this file on `host` (a testinfra Host) in the background for as long as the `with`
    block lasts (at most max_seconds), with `lead` seconds of traffic before the block's body
    and `tail` after; `.report` is what it saw. Options are the script's, by name:
    Traffic(client, "https://10.79.0.100", post="/api/session/notes", timeout=5)."""

    def __init__(
        self, host: Any, base: str, lead: float = 2, tail: float = 2, **options: object
    ) -> None:
        self.host = host
        self.base = base
        self.lead = lead
        self.tail = tail
        self.options = {"max_seconds": 300, **options}
        self.unit = f"webstack-traffic-{time.time_ns()}"
        self.file = f"/var/tmp/{self.unit}.json"
        self.report: dict[str, Any] = {}

    def __enter__(self) -> Traffic:
        copied = self.host.ansible(
            "ansible.builtin.copy", f"src={__file__} dest={REMOTE_PATH} mode=0755", check=False
        )
        assert not copied.get("failed"), copied
        flags = " ".join(
            f"--{name.replace('_', '-')} '{value}'" for name, value in self.options.items()
        )
        started = self.host.run(
            f"systemd-run --unit {self.unit} --collect python3 {REMOTE_PATH} "
            f"{self.base} {self.file} {flags}"
        )
        assert started.rc == 0, started.stderr
        time.sleep(self.lead)
        return self

    def __exit__(self, *_exc: object) -> None:
        time.sleep(self.tail)
        self.host.run(f"systemctl stop {self.unit}")
        deadline = time.monotonic() + 15
        while not self.host.file(self.file).exists:
            assert time.monotonic() < deadline, "the traffic loop wrote no report"
            time.sleep(0.5)
        self.report = json.loads(self.host.file(self.file).content_string)


if __name__ == "__main__":
    main()
