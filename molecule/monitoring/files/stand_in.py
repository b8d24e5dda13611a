#!/usr/bin/python3
"""A stand-in HTTP server for the monitoring scenario: serves fixed app metrics at GET /metrics
and appends the body of every POST (Alertmanager's webhook notifications) to a file, one line
each. Usage: stand-in ADDRESS PORT FILE."""

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS = b"""# HELP webstack_http_requests_total Requests served.
# TYPE webstack_http_requests_total counter
webstack_http_requests_total{route="/hello",method="GET",status="200"} 42
# HELP webstack_http_requests_in_flight Requests being served.
# TYPE webstack_http_requests_in_flight gauge
webstack_http_requests_in_flight 0
"""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(METRICS)))
        self.end_headers()
        self.wfile.write(METRICS)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[3], "ab") as posts:
            posts.write(body.replace(b"\n", b" ") + b"\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler).serve_forever()
