"""Integration: real gunicorn gevent servers (subprocesses) in front of a real redis-server."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from support import (
    KEY_PREFIX,
    LOCALHOST,
    GunicornServer,
    RedisServer,
    app_env,
    free_port,
    gunicorn_command,
    parse_sse,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def servers(redis_server, tmp_path_factory):
    """app-a: one gevent worker, 127.0.0.1 a trusted proxy. app-b: two workers, none trusted."""
    logdir = tmp_path_factory.mktemp("gunicorn")
    a = GunicornServer(
        app_env(
            redis_server.address,
            WEBSTACK_INSTANCE_NAME="app-a",
            WEBSTACK_TRUSTED_PROXIES="127.0.0.1",
        ),
        logdir,
        "-w",
        "1",
        "--worker-connections",
        "1000",
    )
    b = GunicornServer(
        app_env(redis_server.address, WEBSTACK_INSTANCE_NAME="app-b"), logdir, "-w", "2"
    )
    try:
        for server in (a.launch(), b.launch()):
            server.wait_ready()
        yield a, b
    finally:
        for server in (a, b):
            server.stop()


@pytest.fixture(scope="module")
def server_a(servers):
    return servers[0]


@pytest.fixture(scope="module")
def server_b(servers):
    return servers[1]


def http_request(method: str, url: str, **kwargs) -> requests.Response:
    """A one-off request (its connection closed after), never waiting forever."""
    return requests.request(method, url, timeout=kwargs.pop("timeout", 30), **kwargs)


def http_get(url: str, **kwargs) -> requests.Response:
    return http_request("GET", url, **kwargs)


def http_post(url: str, **kwargs) -> requests.Response:
    return http_request("POST", url, **kwargs)


def http_put(url: str, **kwargs) -> requests.Response:
    return http_request("PUT", url, **kwargs)


@pytest.fixture
def browser():
    """A client that keeps cookies; closed afterwards so servers stop without waiting on it."""
    with requests.Session() as session:
        yield session


def expect_json_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert body["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.text


def test_every_endpoint_through_gunicorn(server_a, redis_admin, browser):
    url = server_a.url
    page = browser.get(f"{url}/")
    assert page.status_code == 200
    assert 'id="visits">1<' in page.text
    assert page.headers["X-Served-By"] == "app-a"
    added = browser.post(f"{url}/notes", data={"note": "<b>bold</b>"}, allow_redirects=False)
    assert added.status_code == 303
    assert added.headers["Location"] == "/"
    assert "&lt;b&gt;bold&lt;/b&gt;" in browser.get(f"{url}/").text
    created = browser.post(f"{url}/api/session/notes", json={"note": "api"})
    assert created.status_code == 201
    assert created.json() == {"visits": 2, "notes": ["<b>bold</b>", "api"], "served_by": "app-a"}
    assert browser.get(f"{url}/api/session").json()["notes"] == ["<b>bold</b>", "api"]
    session_id = browser.cookies["webstack_session"].split(".")[0]
    assert redis_admin.exists(f"{KEY_PREFIX}:session:{session_id}")
    assert browser.delete(f"{url}/api/session").json()["notes"] == []
    assert not redis_admin.exists(f"{KEY_PREFIX}:session:{session_id}")

    assert http_get(f"{url}/healthz").json() == {"status": "ok"}
    assert http_get(f"{url}/readyz").json() == {"status": "ok", "redis": "ok"}
    assert http_get(f"{url}/hello").text == "hello from app-a\n"
    assert http_get(f"{url}/io?ms=10").json() == {"slept_ms": 10, "served_by": "app-a"}
    echoed = http_get(f"{url}/hello", headers={"X-Request-ID": "lb-42"})
    assert echoed.headers["X-Request-ID"] == "lb-42"
    assert echoed.headers["X-Served-By"] == "app-a"


def test_bad_input_through_gunicorn(server_a):
    url = server_a.url
    expect_json_error(http_get(f"{url}/missing"), 404, "not_found")
    expect_json_error(http_put(f"{url}/api/session"), 405, "method_not_allowed")
    expect_json_error(http_get(f"{url}/io?ms=5000"), 400, "invalid_parameter")
    expect_json_error(http_get(f"{url}/io?ms=abc"), 400, "invalid_parameter")
    expect_json_error(
        http_post(
            f"{url}/api/session/notes", data=b"{oops", headers={"Content-Type": "application/json"}
        ),
        400,
        "invalid_json",
    )
    expect_json_error(
        http_post(f"{url}/api/session/notes", json={"note": "x" * 501}), 400, "invalid_note"
    )
    expect_json_error(
        http_post(f"{url}/api/session/notes", data="note=x"), 415, "unsupported_media_type"
    )
    big = json.dumps({"note": "x" * 70_000}).encode()
    expect_json_error(
        http_post(
            f"{url}/api/session/notes", data=big, headers={"Content-Type": "application/json"}
        ),
        413,
        "payload_too_large",
    )
    expect_json_error(
        http_post(
            f"{url}/api/session/notes",
            data=iter([big[:40_000], big[40_000:]]),
            headers={"Content-Type": "application/json"},
        ),
        413,
        "payload_too_large",
    )
    chunked_ok = http_post(
        f"{url}/api/session/notes",
        data=iter([b'{"note": ', b'"chunked"}']),
        headers={"Content-Type": "application/json"},
    )
    assert chunked_ok.status_code == 201
    assert chunked_ok.json()["notes"] == ["chunked"]


def test_session_written_by_one_server_is_read_by_another(server_a, server_b, browser):
    browser.get(f"{server_a.url}/")
    browser.post(f"{server_a.url}/api/session/notes", json={"note": "written on a"})
    on_b = browser.get(f"{server_b.url}/api/session")
    assert on_b.json() == {"visits": 1, "notes": ["written on a"], "served_by": "app-b"}
    browser.post(f"{server_b.url}/api/session/notes", json={"note": "written on b"})
    page_b = browser.get(f"{server_b.url}/")
    assert page_b.headers["X-Served-By"] == "app-b"
    assert 'id="visits">2<' in page_b.text
    on_a = browser.get(f"{server_a.url}/api/session").json()
    assert on_a == {"visits": 2, "notes": ["written on a", "written on b"], "served_by": "app-a"}


def cookie_attributes(response: requests.Response) -> set[str]:
    return {part.strip() for part in response.headers["Set-Cookie"].split(";")[1:]}


def test_secure_cookie_only_behind_a_trusted_proxy(server_a, server_b):
    https = {"X-Forwarded-Proto": "https"}
    trusted = cookie_attributes(http_get(f"{server_a.url}/", headers=https))
    assert {"HttpOnly", "SameSite=Lax", "Secure"} <= trusted
    plain = cookie_attributes(http_get(f"{server_a.url}/"))
    assert {"HttpOnly", "SameSite=Lax"} <= plain
    assert "Secure" not in plain
    # app-b does not trust 127.0.0.1 (gunicorn itself would, by its forwarded_allow_ips default)
    untrusted = cookie_attributes(http_get(f"{server_b.url}/", headers=https))
    assert {"HttpOnly", "SameSite=Lax"} <= untrusted
    assert "Secure" not in untrusted


def test_500_concurrent_slow_requests_on_one_gevent_worker(server_a, capsys):
    count, sleep_ms = 500, 200
    barrier = threading.Barrier(count)
    lock = threading.Lock()
    in_flight = peak = 0

    def one(_: int) -> tuple[int, dict, float, float]:
        nonlocal in_flight, peak
        conn = http.client.HTTPConnection(LOCALHOST, server_a.port, timeout=60)
        conn.connect()
        try:
            barrier.wait(timeout=60)
            started = time.monotonic()
            conn.request("GET", f"/io?ms={sleep_ms}")
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            response = conn.getresponse()
            body = json.loads(response.read())
            with lock:
                in_flight -= 1
            return response.status, body, started, time.monotonic()
        finally:
            conn.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    total = max(r[3] for r in results) - min(r[2] for r in results)
    with capsys.disabled():
        print(
            f"\n  {count} concurrent /io?ms={sleep_ms} on one gevent worker: {total:.2f}s "
            f"(serially {count * sleep_ms / 1000:.0f}s), peak {peak} requests in flight"
        )
    assert [r[0] for r in results] == [200] * count
    assert all(r[1] == {"slept_ms": sleep_ms, "served_by": "app-a"} for r in results)
    assert peak >= count * 0.8  # all sent before the first answer (200 ms) came back
    assert total < 10


def test_slow_request_does_not_block_others(server_a):
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(http_get, f"{server_a.url}/io?ms=1500")
        time.sleep(0.2)
        started = time.monotonic()
        assert http_get(f"{server_a.url}/hello").status_code == 200
        assert time.monotonic() - started < 0.5
        assert slow.result(timeout=10).status_code == 200


def read_events(response: requests.Response):
    """Yields (seconds since `response` was asked for, event) as each event arrives."""
    started = time.monotonic() - response.elapsed.total_seconds()
    pending = ""
    for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
        pending += chunk
        *blocks, pending = pending.split("\n\n")
        for block in blocks:
            for event in parse_sse(block + "\n\n"):
                yield time.monotonic() - started, event


def test_events_arrive_one_by_one_through_gunicorn(server_a):
    with requests.get(
        f"{server_a.url}/events?every_ms=700&seconds=2", stream=True, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["Transfer-Encoding"] == "chunked"
        arrivals = list(read_events(response))
    times = {e.get("id", e.get("event", "retry")): t for t, e in arrivals}
    # Each event is sent when it is due, not buffered until the end: the first at once, the
    # others one interval apart, the end when `seconds` have passed.
    assert times["0"] < 0.5
    assert 0.6 < times["1"] < 1.3
    assert 1.3 < times["2"] < 2.0
    assert 1.9 < times["end"] < 3.0
    assert json.loads(arrivals[-1][1]["data"]) == {"events": 3, "seconds": 2, "served_by": "app-a"}


def test_one_gevent_worker_holds_300_streams(server_a):
    count = 300
    barrier = threading.Barrier(count)

    def one(_: int) -> tuple[float, float, int]:
        barrier.wait(timeout=60)
        with requests.get(
            f"{server_a.url}/events?every_ms=1000&seconds=3", stream=True, timeout=30
        ) as response:
            arrivals = list(read_events(response))
            first = time.monotonic() - arrivals[-1][0] + arrivals[1][0]
            return first, time.monotonic(), sum(e.get("event") == "tick" for _, e in arrivals)

    with ThreadPoolExecutor(max_workers=count + 1) as pool:
        streams = [pool.submit(one, i) for i in range(count)]
        time.sleep(1.5)
        started = time.monotonic()
        assert http_get(f"{server_a.url}/hello").status_code == 200  # the worker still serves
        assert time.monotonic() - started < 1
        results = [s.result(timeout=60) for s in streams]
    # Every stream had its first event before any stream ended: all were held at once, by the
    # one worker of app-a, and each got all its ticks.
    assert max(r[0] for r in results) < min(r[1] for r in results)
    assert [r[2] for r in results] == [3] * count


# --- Redis goes away and comes back -----------------------------------------------------


def test_session_survives_a_redis_restart(tmp_path, browser):
    store = RedisServer(tmp_path / "redis", appendonly=True).start()
    server = GunicornServer(
        app_env(store.address, WEBSTACK_INSTANCE_NAME="app-c"), tmp_path, "-w", "1"
    )
    try:
        server.start()
        url = server.url
        browser.get(f"{url}/")
        browser.post(f"{url}/api/session/notes", json={"note": "before the blip"})
        cookie = browser.cookies["webstack_session"]
        before = browser.get(f"{url}/api/session").json()
        assert before == {"visits": 1, "notes": ["before the blip"], "served_by": "app-c"}

        store.stop()
        for response in (
            browser.get(f"{url}/api/session"),
            browser.get(f"{url}/"),
            browser.post(f"{url}/api/session/notes", json={"note": "lost?"}),
            browser.delete(f"{url}/api/session"),
        ):
            expect_json_error(response, 503, "session_store_unavailable")
            assert "Set-Cookie" not in response.headers
        assert browser.cookies["webstack_session"] == cookie
        not_ready = http_get(f"{url}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "unavailable", "redis": "unreachable"}
        assert http_get(f"{url}/healthz").status_code == 200

        store.start()
        wait_until(
            lambda: http_get(f"{url}/readyz").status_code == 200, 10, "/readyz after restart"
        )
        assert browser.get(f"{url}/api/session").json() == before
        assert 'id="visits">2<' in browser.get(f"{url}/").text
        assert browser.cookies["webstack_session"] == cookie
    finally:
        server.stop()
        store.stop()


REDIS_TIMEOUT = 0.5  # WEBSTACK_REDIS_TIMEOUT of the hung-Redis test
REDIS_RETRIES = 1  # WEBSTACK_REDIS_RETRIES of the hung-Redis test
SLACK = 0.5  # seconds a busy test machine may add to an answer


def timed(request, *args, **kwargs) -> tuple[requests.Response, float, float]:
    """The response, and when the request started and ended (time.monotonic)."""
    started = time.monotonic()
    response = request(*args, **kwargs)
    return response, started, time.monotonic()


def test_a_hung_redis_fails_fast_and_blocks_no_other_request(tmp_path, browser):
    # SIGSTOP: Redis's kernel still accepts connections, but nothing answers (a hung or
    # overloaded server, not a refusing one): only the app's socket timeouts can save it.
    store = RedisServer(tmp_path / "redis").start()
    server = GunicornServer(
        app_env(
            store.address,
            WEBSTACK_INSTANCE_NAME="app-d",
            WEBSTACK_REDIS_TIMEOUT=str(REDIS_TIMEOUT),
            WEBSTACK_REDIS_RETRIES=str(REDIS_RETRIES),
        ),
        tmp_path,
        "-w",
        "1",
    )
    try:
        server.start()
        url = server.url
        assert browser.post(f"{url}/api/session/notes", json={"note": "kept"}).status_code == 201
        assert http_get(f"{url}/readyz").status_code == 200
        cookie = {"webstack_session": browser.cookies["webstack_session"]}
        assert store.process is not None
        store.process.send_signal(signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                ready = pool.submit(timed, http_get, f"{url}/readyz")
                session = pool.submit(timed, http_get, f"{url}/api/session", cookies=cookie)
                time.sleep(0.1)
                hello, started, ended = timed(http_get, f"{url}/hello", timeout=5)
                waiting = not ready.done() and not session.done()
                ready_response, ready_start, ready_end = ready.result(timeout=30)
                session_response, session_start, session_end = session.result(timeout=30)
        finally:
            store.process.send_signal(signal.SIGCONT)

        assert hello.status_code == 200
        assert ended - started < 0.5, f"/hello took {ended - started:.2f}s while Redis hung"
        assert waiting, "/readyz or /api/session answered before /hello: nothing overlapped"
        # /readyz: PING, then one immediate retry, each bounded by the timeout.
        assert ready_response.status_code == 503, ready_response.text
        assert ready_response.json() == {"status": "unavailable", "redis": "unreachable"}
        elapsed = ready_end - ready_start
        assert REDIS_TIMEOUT <= elapsed < 2 * REDIS_TIMEOUT + SLACK, f"/readyz took {elapsed:.2f}s"
        # /api/session: the command and its retries, each bounded, with at most 250 ms backoff.
        expect_json_error(session_response, 503, "session_store_unavailable")
        assert "Set-Cookie" not in session_response.headers
        elapsed = session_end - session_start
        bound = (REDIS_RETRIES + 1) * REDIS_TIMEOUT + 0.25 * REDIS_RETRIES + SLACK
        assert REDIS_TIMEOUT <= elapsed < bound, f"/api/session took {elapsed:.2f}s"

        # Redis answers again: so does the app, with the session intact.
        wait_until(
            lambda: http_get(f"{url}/readyz").status_code == 200, 10, "/readyz after SIGCONT"
        )
        assert http_get(f"{url}/api/session", cookies=cookie).json()["notes"] == ["kept"]
    finally:
        server.stop()
        store.stop()


# --- configuration errors ---------------------------------------------------------------

CONFIG_ERRORS = {
    "missing secret key": (
        {"WEBSTACK_SECRET_KEY": None},
        "config error: WEBSTACK_SECRET_KEY is required (at least 32 characters",
    ),
    "bad session ttl": (
        {"WEBSTACK_SESSION_TTL": "abc"},
        "config error: WEBSTACK_SESSION_TTL must be an integer between 60 and 2592000, got 'abc'",
    ),
    "bad redis address": (
        {"WEBSTACK_REDIS_ADDRESS": "redis.example"},
        "config error: WEBSTACK_REDIS_ADDRESS must be host:port (e.g. 127.0.0.1:6379), "
        "got 'redis.example'",
    ),
    "missing metrics directory": (
        {"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/webstack-metrics"},
        "config error: PROMETHEUS_MULTIPROC_DIR must name a directory this process can write",
    ),
}


def bad_settings(case: str) -> dict[str, str]:
    overrides, _ = CONFIG_ERRORS[case]
    return app_env(f"{LOCALHOST}:6379", **overrides)


@pytest.fixture(scope="module")
def gunicorn_config_failures():
    """Start gunicorn (two gevent workers) once per bad setting, all at once; collect results."""
    processes = {
        case: subprocess.Popen(
            gunicorn_command(free_port(), "-w", "2"),
            env=subprocess_env(bad_settings(case)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case in CONFIG_ERRORS
    }
    results = {}
    for case, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=45)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        results[case] = (process.returncode, stdout + stderr)
    return results


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_gunicorn_refuses_to_start_with_one_line(gunicorn_config_failures, case):
    returncode, output = gunicorn_config_failures[case]
    _, expected = CONFIG_ERRORS[case]
    error_lines = [line for line in output.splitlines() if line.startswith("config error:")]
    assert returncode != 0, output
    assert returncode == 4, output  # gunicorn: "App failed to load."
    assert len(error_lines) == 1, output
    assert error_lines[0].startswith(expected), output
    assert "Traceback" not in output, output


def check_config_script() -> str:
    return str(Path(sys.executable).with_name("webstack-app-check-config"))


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_check_config_script_fails_with_one_line(case):
    result = subprocess.run(
        [check_config_script()],
        env=subprocess_env(bad_settings(case)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    _, expected = CONFIG_ERRORS[case]
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected)


def test_check_config_script_accepts_good_settings(tmp_path):
    env_file = tmp_path / "webstack-app.env"
    env_file.write_text("WEBSTACK_SESSION_TTL=900\nWEBSTACK_REDIS_PASSWORD=do-not-print\n")
    settings = app_env(
        f"{LOCALHOST}:6379",
        WEBSTACK_SESSION_TTL=None,
        WEBSTACK_REDIS_PASSWORD=None,
        WEBSTACK_CONFIG_FILE=str(env_file),
    )
    result = subprocess.run(
        [check_config_script()],
        env=subprocess_env(settings),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config ok\n")
    assert "  WEBSTACK_SESSION_TTL=900\n" in result.stdout
    assert "WEBSTACK_REDIS_PASSWORD=(set)" in result.stdout
    assert "do-not-print" not in result.stdout
    quiet = subprocess.run(
        [check_config_script(), "--quiet"],
        env=subprocess_env(settings),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
