"""Server-Sent Events through the balancer: events pass as they come, quiet streams live on."""

import http.client
import json
import re
import time

from nginx_client import APPS, https

testinfra_hosts = ["lb1"]


def stream(path: str, timeout: float) -> tuple[int, list[tuple[float, dict]], bool]:
    """GET a text/event-stream through the balancer: its status, each event with the seconds
    from the request to its arrival, and whether the stream ended cleanly (last chunk seen)."""
    conn = https(timeout=timeout)
    arrivals: list[tuple[float, dict]] = []
    started = time.monotonic()
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.headers["Content-Type"].startswith("text/event-stream"), response.headers
        pending = ""
        complete = False
        while True:
            try:
                chunk = response.read1(65536).decode()
            except (http.client.IncompleteRead, OSError):  # the stream was cut
                break
            if not chunk:  # the last chunk: the answer ended as HTTP says it should
                complete = True
                break
            pending += chunk
            *blocks, pending = pending.split("\n\n")
            for block in blocks:
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                arrivals.append((time.monotonic() - started, fields))
        return (
            response.status,
            arrivals,
            complete and any(f.get("event") == "end" for _, f in arrivals),
        )
    finally:
        conn.close()


def seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)(s|m)?", duration).groups()
    return int(value) * (60 if unit == "m" else 1)


def test_an_event_arrives_before_the_stream_ends() -> None:
    status, arrivals, complete = stream("/events?every_ms=1000&seconds=3", timeout=20)
    assert status == 200
    ticks = [(t, f) for t, f in arrivals if f.get("event") == "tick"]
    # The first event is sent at once: it must arrive long before the stream's 3 s are over,
    # which a buffering proxy would hold back until the end.
    assert ticks[0][0] < 1.5, arrivals
    assert json.loads(ticks[0][1]["data"])["served_by"] in APPS
    assert [f["id"] for _, f in ticks] == ["0", "1", "2"]
    assert complete, arrivals
    assert arrivals[-1][0] >= 3


def test_a_quiet_stream_outlives_the_proxy_read_timeout(host) -> None:
    config = host.run("nginx -T").stdout
    timeouts = re.findall(r"^\s*proxy_read_timeout\s+(\S+);", config, re.MULTILINE)
    # location / comes first in site.conf, the stream location after it.
    general, streams = seconds(timeouts[0]), seconds(timeouts[-1])
    assert streams > general, timeouts
    gap = general + 2  # quieter than the general read timeout allows, within the stream's
    assert gap < streams
    status, arrivals, complete = stream(
        f"/events?every_ms={gap * 1000}&seconds={gap + 1}", timeout=gap + 30
    )
    assert status == 200
    ticks = [t for t, f in arrivals if f.get("event") == "tick"]
    assert len(ticks) == 2, arrivals
    assert ticks[1] - ticks[0] > general  # a gap longer than location / would have allowed
    assert complete, arrivals  # and the stream ended with its end event, not cut
