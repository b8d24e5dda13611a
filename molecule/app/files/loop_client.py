"""A client that loops over requests to the app while a deploy runs, and counts what failed.

Every request opens a new connection (as a balancer's health check or a new visitor does), so
a refused or reset connection during a restart counts as a failure. Some requests are slow
(/io?ms=...) so that requests are in flight when gunicorn is told to stop. Runs until the stop
file appears or --max-seconds pass, whichever is first, then writes a JSON report.
Standard library only: it runs with the machine's python3.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from pathlib import Path


class Tally:
    """Counts shared by the looping threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self.max_seconds = 0.0
        self.first: float | None = None
        self.last: float | None = None

    def add(self, started: float, error: str | None) -> None:
        ended = time.time()
        with self.lock:
            self.first = started if self.first is None else min(self.first, started)
            self.last = ended if self.last is None else max(self.last, ended)
            self.max_seconds = max(self.max_seconds, ended - started)
            if error is None:
                self.ok += 1
            else:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{time.strftime('%H:%M:%S')} {error}")


def request(host: str, port: int, path: str, timeout: float) -> str | None:
    """None when the app answered 200, else what went wrong."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as error:
        return f"{path}: {type(error).__name__}: {error}"
    finally:
        connection.close()
    return None if response.status == 200 else f"{path}: HTTP {response.status}"


def loop(args: argparse.Namespace, path: str, tally: Tally, deadline: float) -> None:
    stop = Path(args.stop_file)
    while time.time() < deadline and not stop.exists():
        started = time.time()
        tally.add(started, request(args.host, args.port, path, args.timeout))
        time.sleep(args.pause)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--paths", default="/hello,/readyz,/io?ms=300,/io?ms=1500")
    parser.add_argument("--threads-per-path", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between requests")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--stop-file", required=True)
    parser.add_argument("--report", required=True)
    args = parser.parse_args()

    tally = Tally()
    began = time.time()
    deadline = began + args.max_seconds
    threads = [
        threading.Thread(target=loop, args=(args, path, tally, deadline), daemon=True)
        for path in args.paths.split(",")
        for _ in range(args.threads_per_path)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(args.max_seconds + args.timeout + 5)
    report = {
        "began": began,
        "ended": time.time(),
        "first_request": tally.first,
        "last_request": tally.last,
        "ok": tally.ok,
        "failed": tally.failed,
        "errors": tally.errors,
        "slowest_seconds": round(tally.max_seconds, 3),
        "stopped_by_deadline": not Path(args.stop_file).exists(),
    }
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
