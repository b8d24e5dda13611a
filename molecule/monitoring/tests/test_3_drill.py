"""The exporter-down drill: stop node1's node exporter, follow ExporterDown from pending to
firing in Prometheus, into Alertmanager, and to the webhook receiver; then start it again."""

import json
import time
from collections.abc import Callable

import pytest
from conftest import journal, wait_until
from testinfra.host import Host
from watch import Monitoring, scenario_vars

EXPORTER = "prometheus-node-exporter"
POSTS = "/var/lib/stand-in/posts.jsonl"  # what the webhook stand-in on node1 received
CAP = 60.0  # no wait is longer than this


@pytest.fixture(scope="module")
def monitoring(machine: Callable[[str], Host]) -> Monitoring:
    return Monitoring.of(machine)


def _node1_down(monitoring: Monitoring) -> list[dict]:
    return [a for a in monitoring.alerts("ExporterDown") if a["labels"]["instance"] == "node1"]


def _notified(monitoring: Monitoring, status: str) -> bool:
    """Whether the webhook stand-in received ExporterDown of node1 with that status."""
    posts = monitoring.node.run(f"cat {POSTS}").stdout.splitlines()
    return any(
        alert["labels"] == {**alert["labels"], "alertname": "ExporterDown", "instance": "node1"}
        and alert["status"] == status
        for post in posts
        for alert in json.loads(post)["alerts"]
    )


def test_exporter_down_alert_goes_pending_then_firing_and_is_notified(
    monitoring: Monitoring,
) -> None:
    assert wait_until(lambda: monitoring.targets()[("node", "node1")]["health"] == "up", CAP, 1)
    assert not _node1_down(monitoring), "ExporterDown fires for node1 before the drill"
    variables = scenario_vars()
    start = time.monotonic()
    monitoring.node.check_output(f"systemctl stop {EXPORTER}")
    try:
        pending = wait_until(lambda: bool(_node1_down(monitoring)), CAP)
        assert pending is not None, "ExporterDown for node1 neither pending nor firing"

        def firing() -> bool:
            return any(a["state"] == "firing" for a in _node1_down(monitoring))

        fired = wait_until(firing, CAP)
        assert fired is not None, f"ExporterDown for node1 not firing: {_node1_down(monitoring)}"
        alert = _node1_down(monitoring)[0]
        assert alert["labels"] == {
            "alertname": "ExporterDown",
            "job": "node",
            "instance": "node1",
            "severity": "warning",
        }
        fired = time.monotonic() - start

        def in_alertmanager() -> bool:
            alerts = monitoring.alertmanager("/api/v2/alerts?filter=alertname%3DExporterDown")
            return any(a["labels"].get("instance") == "node1" for a in alerts)

        assert wait_until(in_alertmanager, CAP) is not None, "Alertmanager has no ExporterDown"
        assert wait_until(lambda: _notified(monitoring, "firing"), CAP) is not None, (
            "the webhook receiver got no notification; Alertmanager's journal:\n"
            + journal(monitoring.mon, "prometheus-alertmanager")
        )
        notified = time.monotonic() - start
        print(
            f"\nExporterDown(node1), with scrape and evaluation every"
            f" {variables['monitoring_scrape_interval']} and for"
            f" {variables['monitoring_alert_exporter_down_for']}: pending after {pending:.1f} s,"
            f" firing after {fired:.1f} s, notified after {notified:.1f} s"
        )
    finally:
        monitoring.node.run(f"systemctl start {EXPORTER}")

    assert wait_until(lambda: not _node1_down(monitoring), CAP) is not None
    assert monitoring.targets()[("node", "node1")]["health"] == "up"
    assert wait_until(lambda: _notified(monitoring, "resolved"), CAP) is not None
