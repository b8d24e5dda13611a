"""Limits: the per-client rate limit, and 10,000 concurrent clients held at once."""

import asyncio
import re
import resource
import threading
import time
from collections import Counter

import testinfra
from nginx_client import LB, get, https, request

testinfra_hosts = ["lb1"]

# The scenario's rate limit (molecule.yml), lower than the role's default so the test does
# not depend on how fast this computer sends.
RATE, BURST = 20, 40
CLIENTS = 10_000


def test_rate_limit_answers_429_past_the_burst(host: testinfra.host.Host) -> None:
    time.sleep(BURST / RATE + 1)  # earlier tests' requests have left the bucket
    statuses: Counter = Counter()
    refused: list = []
    lock = threading.Lock()

    def client() -> None:
        conn = https()
        for _ in range(20):
            answer = request(conn, "/hello")
            with lock:
                statuses[answer.status] += 1
                if answer.status == 429:
                    refused.append(answer)
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.monotonic() - started
    print(f"\n400 requests from one address in {elapsed:.1f}s: {dict(statuses)}")
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] > 0
    assert BURST <= statuses[200] <= BURST + RATE * elapsed + 5
    # The refusal is in the app's JSON shape, like every other error.
    refused[0].nginx_error("too_many_requests")
    # Another client address is not limited meanwhile ...
    other = host.run("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/hello")
    assert other.stdout == "200"
    # ... and this one is served again once it slows down.
    time.sleep(BURST / RATE + 1)
    assert get().status == 200


async def hold_connections(count: int, held: asyncio.Event, release: asyncio.Event) -> int:
    """Opens `count` HTTP keep-alive connections, each with one answered request, and holds them."""
    opening = asyncio.Semaphore(300)
    writers = []

    async def one() -> None:
        async with opening:
            reader, writer = await asyncio.open_connection(LB, 80)
            writer.write(b"GET /c10k HTTP/1.1\r\nHost: webstack.test\r\n\r\n")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    held.set()
    await release.wait()
    for writer in writers:
        writer.close()
    return len(writers)


def test_ten_thousand_concurrent_clients(host: testinfra.host.Host) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard > CLIENTS + 500, f"this computer allows only {hard} open files"
    held, release = asyncio.Event(), asyncio.Event()
    result: dict = {}

    def run() -> None:
        try:
            coroutine = hold_connections(CLIENTS, held, release)
            result["held"] = asyncio.run(asyncio.wait_for(coroutine, timeout=120))
        except Exception as error:  # reported below
            result["error"] = repr(error)
            held.set()

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    try:
        thread.start()
        deadline = time.monotonic() + 90
        while not held.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
        opened_in = time.monotonic() - started
        assert held.is_set() and "error" not in result, result
        stub = host.run("curl -fsS http://127.0.0.1:8081/stub_status").stdout
        active = int(re.search(r"Active connections:\s*(\d+)", stub).group(1))
        # While 10,000 clients are connected, a new one is still proxied to the app.
        answer = get("/hello")
    finally:
        release.set()
        thread.join(timeout=30)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    print(f"\n{CLIENTS} clients connected in {opened_in:.1f}s; nginx reports {active} active")
    assert active >= CLIENTS, stub
    assert answer.status == 200
    assert result.get("held") == CLIENTS
