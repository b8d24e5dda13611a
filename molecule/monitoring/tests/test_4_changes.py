"""Changes go live the way the role promises: a changed rule or Alertmanager setting is
reloaded (the same processes keep running); a configuration that promtool refuses never
replaces the live one; a bad value stops the role before it changes anything."""

from collections.abc import Callable

import pytest
from playbooks import assert_rejected_before_any_change, flat_output
from testinfra.host import Host
from watch import ALERTMANAGER_PORT, PROMETHEUS_PORT, Monitoring, run_converge

RULES = "/etc/prometheus/rules/webstack.rules.yml"
CONFIG = "/etc/prometheus/prometheus.yml"


@pytest.fixture(scope="module")
def monitoring(machine: Callable[[str], Host]) -> Monitoring:
    return Monitoring.of(machine)


def test_a_changed_rule_and_route_are_reloaded_not_restarted(
    monitoring: Monitoring, pytestconfig: pytest.Config
) -> None:
    pids = {unit: monitoring.main_pid(unit) for unit in ("prometheus", "prometheus-alertmanager")}
    loaded = {
        PROMETHEUS_PORT: "prometheus_config_last_reload_success_timestamp_seconds",
        ALERTMANAGER_PORT: "alertmanager_config_last_reload_success_timestamp_seconds",
    }
    before = {port: monitoring.metric(port, name) for port, name in loaded.items()}
    changes = {
        "monitoring_alert_latency_p99_seconds": 0.75,
        "monitoring_alertmanager_repeat_interval": "3h",
    }
    try:
        played = run_converge(pytestconfig, **changes)
        assert played.returncode == 0, flat_output(played)[-3000:]
        assert "histogram_quantile" in monitoring.mon.file(RULES).content_string
        assert "> 0.75" in monitoring.mon.file(RULES).content_string
        latency = [
            rule["query"]
            for group in monitoring.prometheus("/api/v1/rules?type=alert")["groups"]
            for rule in group["rules"]
            if rule["name"] == "HttpLatencyP99High"
        ]
        assert len(latency) == 1 and latency[0].endswith("> 0.75"), latency
        route = monitoring.alertmanager("/api/v2/status")["config"]["original"]
        assert "repeat_interval: 3h" in route
        after = {port: monitoring.metric(port, name) for port, name in loaded.items()}
        assert all(after[port] > before[port] for port in loaded), (before, after)
        assert {unit: monitoring.main_pid(unit) for unit in pids} == pids
    finally:
        restored = run_converge(pytestconfig)
        assert restored.returncode == 0, flat_output(restored)[-3000:]


def test_a_configuration_that_promtool_refuses_never_goes_live(
    monitoring: Monitoring, pytestconfig: pytest.Config
) -> None:
    live = monitoring.mon.file(CONFIG).sha256sum
    pid = monitoring.main_pid("prometheus")
    # A scrape timeout longer than the scrape interval (2 s in this scenario) is invalid.
    played = run_converge(pytestconfig, monitoring_scrape_timeout="5s")
    output = flat_output(played)
    assert played.returncode != 0, output[-3000:]
    assert "scrape timeout greater than scrape interval" in output, output[-3000:]
    assert monitoring.mon.file(CONFIG).sha256sum == live
    assert monitoring.main_pid("prometheus") == pid
    assert monitoring.prometheus("/api/v1/status/runtimeinfo")["reloadConfigSuccess"] is True


CASES = {
    "an unknown receiver": (
        {"monitoring_alertmanager_receiver": "pager"},
        "include monitoring_alertmanager_receiver ('pager')",
    ),
    "a retention size without unit": (
        {"monitoring_prometheus_retention_size": "4096"},
        "monitoring_prometheus_retention_size must be a size with its unit",
    ),
    "a duration without unit": (
        {"monitoring_alert_vip_for": "30"},
        "monitoring_alert_vip_for is '30': give a Prometheus duration",
    ),
}


@pytest.mark.parametrize("bad_value, message", CASES.values(), ids=CASES.keys())
def test_a_bad_value_fails_before_any_change(
    monitoring: Monitoring, pytestconfig: pytest.Config, bad_value: dict, message: str
) -> None:
    assert_rejected_before_any_change(pytestconfig, monitoring.mon, "mon1", bad_value, [message])
