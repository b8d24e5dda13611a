"""The app's Prometheus metrics: in one process (in memory), and under gunicorn with several
workers (prometheus_client multiprocess mode, files in PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import requests
from bottle import Bottle
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from support import GunicornServer, WsgiClient, app_env, free_port, wait_until
from webstack_app.metrics import AppMetrics, RequestMetrics

REQUESTS = "webstack_http_requests_total"
DURATION = "webstack_http_request_duration_seconds"
IN_FLIGHT = "webstack_http_requests_in_flight"
STORE_ERRORS = "webstack_session_store_errors_total"
APP_ROUTES = {
    "/",
    "/notes",
    "/api/session",
    "/api/session/notes",
    "/healthz",
    "/readyz",
    "/metrics",
    "/hello",
    "/io",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the scrape does not have it (not counted yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample, labels in samples if sample == name}


def scrape(client: WsgiClient) -> Samples:
    result = client.get("/metrics")
    assert result.status == 200, result.body
    return parse(result.text)


# --- one process ------------------------------------------------------------------------


def test_metrics_endpoint_serves_the_prometheus_text_format(client):
    result = client.get("/metrics")
    assert result.status == 200
    assert result.header("Content-Type").startswith("text/plain; version=0.0.4")
    assert result.header("Cache-Control") == "no-store"
    assert result.header("X-Served-By") == "test-app"
    families = {
        family.name: family.type
        for family in text_string_to_metric_families(result.text)
        if not family.name.endswith("_created")  # one process only; no such series with files
    }
    assert families == {
        "webstack_http_requests": "counter",
        "webstack_http_request_duration_seconds": "histogram",
        "webstack_http_requests_in_flight": "gauge",
        "webstack_session_store_errors": "counter",
    }
    samples = parse(result.text)
    assert value(samples, IN_FLIGHT) == 1  # this very request
    assert value(samples, STORE_ERRORS) == 0


def test_openmetrics_when_asked(client):
    result = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert result.status == 200
    assert result.header("Content-Type").startswith("application/openmetrics-text")
    assert result.text.endswith("# EOF\n")


def test_counters_and_histogram_rise_with_requests(client):
    for _ in range(3):
        assert client.get("/hello").status == 200
    assert client.get("/io?ms=60").status == 200
    samples = scrape(client)
    assert value(samples, REQUESTS, route="/hello", method="GET", status="200") == 3
    assert value(samples, REQUESTS, route="/io", method="GET", status="200") == 1
    assert value(samples, f"{DURATION}_count", route="/hello", method="GET") == 3
    io = {"route": "/io", "method": "GET"}
    # /io slept 60 ms: above the 50 ms bucket, within +Inf; the sum is at least the sleep.
    assert value(samples, f"{DURATION}_bucket", le="0.05", **io) == 0
    assert value(samples, f"{DURATION}_bucket", le="+Inf", **io) == 1
    assert value(samples, f"{DURATION}_sum", **io) >= 0.06
    # Buckets fit a web app: fine below 100 ms, and up to the 2 s of the slowest /io.
    buckets = {dict(labels)["le"] for name, labels in samples if name == f"{DURATION}_bucket"}
    assert {"0.005", "0.05", "0.1", "0.25", "0.5", "1.0", "1.5", "2.0", "2.5", "+Inf"} <= buckets
    # A second scrape counts the first one.
    again = scrape(client)
    assert value(again, REQUESTS, route="/metrics", method="GET", status="200") >= 1
    assert value(again, REQUESTS, route="/hello", method="GET", status="200") == 3


def test_route_label_is_the_pattern_never_the_path(client):
    for number in range(20):
        assert client.get(f"/no/such/page/{number}").status == 404
    assert client.request("PUT", "/api/session").status == 405
    assert client.request("BREW", "/hello").status == 405
    assert client.get("/io?ms=abc").status == 400
    big = {"note": "x" * 70_000}
    assert client.post("/api/session/notes", json_body=big).status == 413
    samples = scrape(client)
    assert value(samples, REQUESTS, route="other", method="GET", status="404") == 20
    assert value(samples, REQUESTS, route="other", method="PUT", status="405") == 1
    assert value(samples, REQUESTS, route="other", method="other", status="405") == 1
    assert value(samples, REQUESTS, route="/io", method="GET", status="400") == 1
    # Refused by the body limit before routing: still counted under its route.
    assert value(samples, REQUESTS, route="/api/session/notes", method="POST", status="413") == 1
    routes = label_values(samples, REQUESTS, "route")
    assert routes <= APP_ROUTES | {"other"}, routes


def test_route_with_parameters_and_a_failing_route():
    app = Bottle()

    @app.get("/items/<item_id:int>")
    def item(item_id: int) -> str:
        return str(item_id)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    metrics = AppMetrics()
    client = WsgiClient(RequestMetrics(app, metrics))
    for item_id in (1, 2, 3):
        assert client.get(f"/items/{item_id}").status == 200
    assert client.get("/boom").status == 500  # bottle's catchall answers an exception
    samples = parse(metrics.exposition(None)[0].decode())
    labels = {"route": "/items/<item_id:int>", "method": "GET", "status": "200"}
    assert value(samples, REQUESTS, **labels) == 3
    assert value(samples, REQUESTS, route="/boom", method="GET", status="500") == 1
    assert value(samples, IN_FLIGHT) == 0


def test_session_store_errors_are_counted_when_redis_is_down(make_app):
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = WsgiClient(
        make_app(
            WEBSTACK_REDIS_ADDRESS=down, WEBSTACK_REDIS_TIMEOUT="0.2", WEBSTACK_REDIS_RETRIES="0"
        )
    )
    assert client.get("/").status == 503
    assert client.post("/api/session/notes", json_body={"note": "lost"}).status == 503
    assert client.get("/api/session").status == 200  # no cookie: Redis is not asked
    assert client.get("/readyz").status == 503  # a failed check, not a failed request
    samples = scrape(client)
    assert value(samples, STORE_ERRORS) == 2
    assert value(samples, REQUESTS, route="/", method="GET", status="503") == 1
    assert value(samples, REQUESTS, route="/api/session/notes", method="POST", status="503") == 1
    assert value(samples, REQUESTS, route="/readyz", method="GET", status="503") == 1


def test_each_app_has_its_own_metrics_in_one_process(make_app):
    first, second = WsgiClient(make_app()), WsgiClient(make_app())
    first.get("/hello")
    assert value(scrape(first), REQUESTS, route="/hello", method="GET", status="200") == 1
    assert value(scrape(second), REQUESTS, route="/hello", method="GET", status="200") == 0


# --- several gunicorn workers -------------------------------------------------------------


def workers_of(server: GunicornServer) -> set[int]:
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text()
    return {int(pid) for pid in children.split()}


def per_worker(directory: Path, kind: str, name: str, **labels: str) -> dict[int, float]:
    """A sample's value in each worker's own file (`kind`: counter, gauge_livesum ...)."""
    values = {}
    for path in directory.glob(f"{kind}_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        values[pid] = sum(
            sample.value
            for metric in MultiProcessCollector.merge([str(path)], accumulate=False)
            for sample in metric.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )
    return values


def http_scrape(server: GunicornServer) -> Samples:
    answer = requests.get(f"{server.url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


@pytest.fixture
def multiprocess_server(redis_server, tmp_path):
    """gunicorn, two gevent workers, metrics in files, the child_exit hook of the app."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    server = GunicornServer(
        app_env(redis_server.address, PROMETHEUS_MULTIPROC_DIR=str(directory)),
        tmp_path,
        "-w",
        "2",
        "--config",
        "python:webstack_app.gunicorn_hooks",
    )
    try:
        server.start()
        wait_until(lambda: len(workers_of(server)) == 2, 30, "two gunicorn workers")
        yield server, directory
    finally:
        server.stop()


@pytest.mark.integration
def test_metrics_are_summed_over_workers_and_survive_a_dead_worker(multiprocess_server):
    server, directory = multiprocess_server
    hello = {"route": "/hello", "method": "GET", "status": "200"}

    # Requests on new connections, until both workers have answered some (bounded).
    sent = 0
    while sent < 400:
        for _ in range(20):
            assert requests.get(f"{server.url}/hello", timeout=10).status_code == 200
        sent += 20
        counts = per_worker(directory, "counter", REQUESTS, **hello)
        if len([count for count in counts.values() if count > 0]) >= 2:
            break
    assert sum(counts.values()) == sent, counts
    assert len([count for count in counts.values() if count > 0]) >= 2, (
        f"after {sent} requests the workers answered {counts}: not spread over two"
    )
    # /metrics, from whichever worker answers it, counts every worker's requests.
    for _ in range(4):
        assert value(http_scrape(server), REQUESTS, **hello) == sent

    # A worker killed in the middle of a slow request: its requests stay counted, and its
    # in-flight gauge goes with it (child_exit hook), so the sum is not stuck above zero.
    outcome: list[object] = []

    def slow_request() -> None:
        try:
            outcome.append(requests.get(f"{server.url}/io?ms=2000", timeout=10))
        except requests.RequestException as error:
            outcome.append(error)

    slow = threading.Thread(target=slow_request)
    slow.start()
    wait_until(
        lambda: any(per_worker(directory, "gauge_livesum", IN_FLIGHT).values()),
        5,
        "the slow request in flight",
    )
    busy = [
        pid for pid, count in per_worker(directory, "gauge_livesum", IN_FLIGHT).items() if count
    ]
    assert len(busy) == 1, busy
    os.kill(busy[0], signal.SIGKILL)
    slow.join(timeout=15)
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError), outcome
    wait_until(
        lambda: busy[0] not in workers_of(server) and len(workers_of(server)) == 2,
        30,
        "gunicorn to replace the killed worker",
    )
    wait_until(
        lambda: not (directory / f"gauge_livesum_{busy[0]}.db").exists(),
        10,
        "child_exit to drop the killed worker's gauge",
    )
    assert (directory / f"counter_{busy[0]}.db").exists()
    samples = http_scrape(server)
    assert value(samples, IN_FLIGHT) == 1  # the scrape itself
    assert value(samples, REQUESTS, **hello) == sent
    for _ in range(10):
        assert requests.get(f"{server.url}/hello", timeout=10).status_code == 200
    assert value(http_scrape(server), REQUESTS, **hello) == sent + 10


@pytest.mark.integration
def test_in_flight_is_summed_over_workers(multiprocess_server):
    server, directory = multiprocess_server
    threads = [
        threading.Thread(target=requests.get, args=(f"{server.url}/io?ms=1500",), daemon=True)
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    wait_until(
        lambda: sum(per_worker(directory, "gauge_livesum", IN_FLIGHT).values()) == 6,
        5,
        "six slow requests in flight",
    )
    assert value(http_scrape(server), IN_FLIGHT) == 7  # and the scrape itself
    for thread in threads:
        thread.join(timeout=10)
    assert value(http_scrape(server), IN_FLIGHT) == 1
