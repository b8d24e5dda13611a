"""What Prometheus scrapes and evaluates: every target of the inventory, named by its inventory
name, up; the stack's alert rules loaded; Alertmanager wired in."""

from collections.abc import Callable

import pytest
from conftest import wait_until
from testinfra.host import Host
from watch import ALERTMANAGER_PORT, PROMETHEUS_PORT, Monitoring

# The rules file covers exactly these alerts (roles/monitoring/README.md).
ALERTS = {
    "VipMoved",
    "VipHeldByNone",
    "VipHeldByBoth",
    "AppMachineDown",
    "Http5xxRatioHigh",
    "HttpLatencyP99High",
    "RedisPrimaryChanged",
    "RedisNoReplicaInSync",
    "ExporterDown",
    "DiskFilling",
}


@pytest.fixture(scope="module")
def monitoring(machine: Callable[[str], Host]) -> Monitoring:
    return Monitoring.of(machine)


def test_every_target_is_up_under_its_inventory_name(monitoring: Monitoring) -> None:
    mon, node = monitoring.address, monitoring.node_address
    # (job, instance) -> where it is scraped; node1 is in group app, mon1 in monitoring. The
    # groups lb and redis have no machine here, so the jobs nginx and redis have no target.
    wanted = {
        ("node", "mon1"): f"http://{mon}:9100/metrics",
        ("node", "node1"): f"http://{node}:9100/metrics",
        ("app", "node1"): f"http://{node}:8000/metrics",
        ("prometheus", "mon1"): f"http://{mon}:{PROMETHEUS_PORT}/metrics",
        ("alertmanager", "mon1"): f"http://{mon}:{ALERTMANAGER_PORT}/metrics",
    }

    def all_up() -> bool:
        return all(t["health"] == "up" for t in monitoring.targets().values())

    waited = wait_until(all_up, timeout=30, step=1)
    targets = monitoring.targets()
    assert {key: target["scrapeUrl"] for key, target in targets.items()} == wanted
    assert waited is not None, {key: (t["health"], t["lastError"]) for key, t in targets.items()}


def test_the_alert_rules_are_loaded_and_evaluated(monitoring: Monitoring) -> None:
    groups = monitoring.prometheus("/api/v1/rules?type=alert")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == ALERTS
    assert len(rules) == len(ALERTS)
    assert {rule["file"] for rule in groups} == {"/etc/prometheus/rules/webstack.rules.yml"}
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not unhealthy


def test_prometheus_sends_alerts_to_the_alertmanager_of_its_machine(
    monitoring: Monitoring,
) -> None:
    wired = monitoring.prometheus("/api/v1/alertmanagers")["activeAlertmanagers"]
    assert [am["url"] for am in wired] == [
        f"http://{monitoring.address}:{ALERTMANAGER_PORT}/api/v2/alerts"
    ]
