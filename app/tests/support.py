"""Test helpers: real redis-server and gunicorn processes, and an in-process WSGI client."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import wsgiref.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests

ADMIN_PASSWORD = "admin-pw-for-tests"
APP_USER = "webstack"
APP_PASSWORD = "app-pw-for-tests"
KEY_PREFIX = "wstest"
SECRET_KEY = "test-secret-key-0123456789-abcdefghijklmnop"
LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class RedisServer:
    """A redis-server on 127.0.0.1: `default` user with a password, plus an ACL user that
    may touch only `wstest:*` keys, as the app's settings would name it."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            "redis-server",
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            "--requirepass", ADMIN_PASSWORD,
            "--user", APP_USER, "on", f">{APP_PASSWORD}", f"~{KEY_PREFIX}:*", "&*", "+@all",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.workdir / "redis.log").read_text(errors="replace")
            raise AssertionError(f"redis-server exited with {self.process.returncode}:\n{log}")
        try:
            return bool(self.admin().ping())
        except redis.RedisError:
            return False

    def admin(self) -> redis.Redis:
        return redis.Redis(
            host=LOCALHOST,
            port=self.port,
            password=ADMIN_PASSWORD,
            decode_responses=True,
            socket_timeout=2,
        )

    def stop(self) -> None:
        """SIGTERM: redis-server shuts down as it would under systemd (AOF flushed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"


def app_env(redis_address: str, **overrides: str) -> dict[str, str]:
    """WEBSTACK_* settings for the test Redis, as a systemd unit would set them."""
    env = {
        "WEBSTACK_REDIS_ADDRESS": redis_address,
        "WEBSTACK_REDIS_USERNAME": APP_USER,
        "WEBSTACK_REDIS_PASSWORD": APP_PASSWORD,
        "WEBSTACK_SECRET_KEY": SECRET_KEY,
        "WEBSTACK_KEY_PREFIX": KEY_PREFIX,
        "WEBSTACK_SESSION_TTL": "600",
        "WEBSTACK_INSTANCE_NAME": "test-app",
        "WEBSTACK_LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def subprocess_env(settings: dict[str, str]) -> dict[str, str]:
    """This environment without any WEBSTACK_*, GUNICORN_* or PROMETHEUS_MULTIPROC_DIR
    variable, plus `settings`."""
    inherited = ("WEBSTACK_", "GUNICORN_", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
    base = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    return {**base, **settings}


class GunicornServer:
    """`gunicorn -k gevent webstack_app.wsgi:app` on 127.0.0.1:<free port>."""

    def __init__(self, settings: dict[str, str], logdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.settings = settings
        self.extra = extra
        self.log_path = logdir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def command(self) -> list[str]:
        return gunicorn_command(self.port, *self.extra)

    def launch(self) -> GunicornServer:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), env=subprocess_env(self.settings), stdout=log, stderr=log
            )
        return self

    def wait_ready(self) -> GunicornServer:
        wait_until(self._healthy, 30, f"gunicorn on port {self.port}", interval=0.1)
        return self

    def start(self) -> GunicornServer:
        return self.launch().wait_ready()

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def gunicorn_command(port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        "-k", "gevent",
        "--bind", f"{LOCALHOST}:{port}",
        "--no-control-socket",  # several test servers on one machine
        "--graceful-timeout", "5",
        *extra,
        "webstack_app.wsgi:app",
    ]  # fmt: skip


# --- in-process WSGI client -------------------------------------------------------------


@dataclass
class Result:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        assert (self.header("Content-Type") or "").startswith("application/json"), self.headers
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()

    def session_cookie(self) -> str | None:
        """The `name=value` part of the session Set-Cookie, if any."""
        for value in self.header_all("Set-Cookie"):
            if value.startswith("webstack_session="):
                return value.split(";", 1)[0]
        return None


@dataclass
class WsgiClient:
    """Calls a WSGI app in this process, keeping the session cookie like a browser would."""

    app: Any
    cookie: str | None = None
    remote_addr: str = LOCALHOST
    scheme: str = "http"
    default_headers: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Result:
        path, _, query = path.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.remote_addr,
            "wsgi.url_scheme": self.scheme,
        }
        wsgiref.util.setup_testing_defaults(environ)
        all_headers = {**self.default_headers, **(headers or {})}
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        if self.cookie:
            all_headers.setdefault("Cookie", self.cookie)
        for name, value in all_headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
            else:
                environ[f"HTTP_{key}"] = value
        if chunked:
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"  # body as the server de-chunked it
        elif body:
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
        captured: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = headers

        chunks = self.app(environ, start_response)
        try:
            data = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()
        result = Result(captured["status"], captured["headers"], data)
        new_cookie = result.session_cookie()
        if new_cookie is not None:
            self.cookie = None if new_cookie == "webstack_session=" else new_cookie
        return result

    def get(self, path: str, **kwargs: Any) -> Result:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Result:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Result:
        return self.request("DELETE", path, **kwargs)


def session_keys(redis_admin) -> set[str]:
    """Every session key in the test Redis."""
    return set(redis_admin.scan_iter(f"{KEY_PREFIX}:session:*"))


def session_id_of(cookie: str) -> str:
    """The session id inside `webstack_session=<id>.<mac>`."""
    return cookie.split("=", 1)[1].split(".", 1)[0]


def parse_sse(text: str) -> list[dict[str, str]]:
    """The events of a text/event-stream body, each as its fields (`event`, `data`, `id`,
    `retry`); blank-line separated blocks, comment lines (`:`) skipped."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            events.append(fields)
    return events
