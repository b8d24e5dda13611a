"""The sessions' Redis goes down: both apps answer 503 on the session routes, and only there.

The balancer retries a 503 for idempotent requests only, and a store outage, which every app
machine shares, must not take the app machines out of the upstream: pages that need no
session (/hello) keep being served. Redis is stopped for this module only and started again
at its end, whatever happened.
"""

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import testinfra
from conftest import journal, wait_until
from nginx_client import APPS, Answer, access_log_entry, get, https, request

testinfra_hosts = ["lb1"]

UPSTREAMS = {f"{address}:8000" for address in APPS.values()}
# The loop of the /hello test: bounded in count, and slower than the scenario's rate limit
# (20 r/s) with its two requests per round.
ROUNDS, PAUSE = 40, 0.15
# The role's nginx_backend_default_fail_timeout (the scenario keeps it): a machine whose answer
# was a 503 is skipped for that long (max_fails 1), and then nginx tries the fallback copy.
FAIL_TIMEOUT = 10


def add_note(cookie: str | None = None) -> Answer:
    """POST /api/session/notes: not idempotent, so never retried by the balancer."""
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    conn = https()
    try:
        body = json.dumps({"note": "n"}).encode()
        return request(conn, "/api/session/notes", "POST", headers, body)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def session_cookie() -> str:
    """A session made while Redis is up: with it, GET /api/session reads Redis."""
    answer = add_note()
    assert answer.status == 201, answer.body
    return answer.headers["Set-Cookie"].split(";", 1)[0]


@pytest.fixture(scope="module")
def store_down(machine: Callable[[str], testinfra.host.Host], session_cookie: str) -> Iterator[str]:
    redis = machine("redis1")
    stop = redis.run("timeout 60 systemctl stop redis-server")
    assert stop.rc == 0, stop.stderr
    try:
        down = wait_until(
            lambda: get("/api/session", {"Cookie": session_cookie}).status == 503, timeout=10
        )
        assert down is not None, "the session routes do not answer 503 with Redis stopped"
        yield session_cookie
    finally:
        start = redis.run("timeout 60 systemctl start redis-server")
        back = wait_until(
            lambda: get("/api/session", {"Cookie": session_cookie}).status == 200, timeout=30
        )
        assert start.rc == 0 and back is not None, journal(redis, "redis-server")


def test_an_idempotent_request_is_retried_on_the_other_machine(
    host: testinfra.host.Host, store_down: str
) -> None:
    # The fixture's own 503s marked machines failed: once that has passed, both are in the
    # upstream again, and the retry has a machine not yet tried.
    time.sleep(FAIL_TIMEOUT + 1)
    answer = get("/api/session", {"Cookie": store_down})
    assert answer.status == 503, answer.body
    assert answer.headers["Retry-After"] == "1", "the app's own 503 reaches the client"
    entry = access_log_entry(host, answer.headers["X-Request-ID"])
    tried = entry["upstream_addr"].split(", ")
    # Each machine once: nginx_proxy_next_upstream_tries (3) is capped at the two app machines,
    # so no third try reaches a `backup` server and ends in nginx's own 502.
    assert len(tried) == 2 and set(tried) == UPSTREAMS, entry
    assert set(entry["upstream_status"].split(", ")) == {"503"}, entry


def test_a_post_is_not_retried(host: testinfra.host.Host, store_down: str) -> None:
    answer = add_note(store_down)
    assert answer.status == 503, answer.body
    entry = access_log_entry(host, answer.headers["X-Request-ID"])
    assert entry["upstream_addr"] in UPSTREAMS, f"tried more than one machine: {entry}"
    assert entry["upstream_status"] == "503", entry


def test_pages_without_a_session_are_served_through_a_store_outage(store_down: str) -> None:
    # Users keep asking for their sessions (each a 503 from both machines) while others ask
    # for /hello, which needs no Redis: its machines must stay in the upstream.
    hello: Counter = Counter()
    session: Counter = Counter()
    started = time.monotonic()
    for _ in range(ROUNDS):
        session[get("/api/session", {"Cookie": store_down}).status] += 1
        hello[get("/hello").status] += 1
        time.sleep(PAUSE)
    elapsed = time.monotonic() - started
    print(f"\n{ROUNDS} rounds in {elapsed:.1f}s: /api/session {session}, /hello {hello}")
    # The session routes fail either way: with the app's 503, or with nginx's 502 once both
    # machines are marked failed and a third try finds no server left.
    assert set(session) <= {502, 503}, session
    # Without the fallback (nginx_upstream_all_failed_fallback) both machines leave the
    # upstream after a few of those 503s, and most of these get 502 "no live upstreams".
    assert hello == {200: ROUNDS}, f"/hello failed during the store outage: {dict(hello)}"
