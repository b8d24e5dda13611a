"""The topology as its operator sees it in Prometheus: every exporter up, the app's own
counters moving with the traffic sent through the VIP, and an alert when an app machine dies.

Prometheus is asked from the lab host, as an operator's browser would (the firewall lets the
admin network reach it)."""

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable

from conftest import CONNECTED, TIMED_OUT, tcp_probe, wait_until
from contract import address, port, vip
from testinfra.host import Host

LAB = os.environ.get("LAB_NAME", "molecule-topology")
VIP = vip()
MONITOR = address("monitor1")
PROMETHEUS = f"http://{MONITOR}:{port('monitoring_prometheus_port')}"

# What Prometheus must scrape: job -> the machines it scrapes (instance = inventory name).
SERVERS = ["lb1", "lb2", "app1", "app2", "redis1", "redis2", "redis3", "monitor1"]
EXPECTED_TARGETS = {
    "node": set(SERVERS),
    "nginx": {"lb1", "lb2"},
    "redis": {"redis1", "redis2", "redis3"},
    "app": {"app1", "app2"},
    "prometheus": {"monitor1"},
    "alertmanager": {"monitor1"},
}
# The alert an operator gets when an app machine stops serving.
APP_DOWN_ALERT = "AppMachineDown"
# GETs a URL N times from a lab machine (self-signed certificate), printing each status.
GET_MANY = (
    "import ssl, sys, urllib.request; context = ssl._create_unverified_context(); "
    "[print(urllib.request.urlopen(sys.argv[1], context=context, timeout=10).status) "
    "for _ in range(int(sys.argv[2]))]"
)

MachineGetter = Callable[[str], Host]


def api(path: str, **params: str) -> dict:
    """GET a Prometheus API path; the `data` of the answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{PROMETHEUS}{path}{query}", timeout=5) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    return answer["data"]


def value(expression: str) -> float | None:
    """The single value of an instant query, or None when it has no sample."""
    samples = api("/api/v1/query", query=expression)["result"]
    return float(samples[0]["value"][1]) if samples else None


def targets() -> dict[str, dict[str, str]]:
    """job -> {instance: health} of every active target."""
    found: dict[str, dict[str, str]] = {}
    for target in api("/api/v1/targets", state="active")["activeTargets"]:
        labels = target["labels"]
        found.setdefault(labels["job"], {})[labels["instance"]] = target["health"]
    return found


def test_every_exporter_is_up() -> None:
    def all_up() -> bool:
        found = targets()
        return all(
            {instance for instance, health in found.get(job, {}).items() if health == "up"}
            == instances
            for job, instances in EXPECTED_TARGETS.items()
        )

    assert wait_until(all_up, timeout=120, step=5) is not None, targets()


def test_the_app_request_counter_rises_with_traffic_through_the_vip(
    machine: MachineGetter,
) -> None:
    client = machine("client1")
    counter = 'sum(webstack_http_requests_total{route="/hello"})'
    before = value(counter) or 0.0
    sent = 40
    result = client.run(f"python3 -c '{GET_MANY}' https://{VIP}/hello {sent}")
    assert result.stdout.split() == ["200"] * sent, result.stdout + result.stderr
    risen = wait_until(lambda: (value(counter) or 0.0) >= before + sent, timeout=60)
    assert risen is not None, f"counter {before} -> {value(counter)} after {sent} GETs"


def test_exactly_one_balancer_reports_the_vip() -> None:
    held = wait_until(lambda: value("sum(webstack_keepalived_vip_held)") == 1.0, timeout=60)
    assert held is not None, api("/api/v1/query", query="webstack_keepalived_vip_held")


def test_sentinels_agree_on_the_primary() -> None:
    agreed = wait_until(
        lambda: (
            value("count(count by (address) (webstack_sentinel_master == 1))") == 1.0
            and value("sum(webstack_sentinel_master_ok)") == 3.0
        ),
        timeout=60,
    )
    assert agreed is not None, api("/api/v1/query", query="webstack_sentinel_master")


def firing_or_pending(name: str, instance: str) -> str | None:
    for alert in api("/api/v1/alerts")["alerts"]:
        labels = alert["labels"]
        if labels.get("alertname") == name and labels.get("instance") == instance:
            return alert["state"]
    return None


def test_a_killed_app_machine_raises_its_alert() -> None:
    assert firing_or_pending(APP_DOWN_ALERT, "app2") is None
    started = time.monotonic()
    subprocess.run(["docker", "stop", f"{LAB}-app2"], check=True, capture_output=True)
    try:
        raised = wait_until(
            lambda: firing_or_pending(APP_DOWN_ALERT, "app2") in ("pending", "firing"),
            timeout=120,
            step=3,
        )
        assert raised is not None, api("/api/v1/alerts")
        print(f"\n[figure] app2 stopped: {APP_DOWN_ALERT} pending after {raised:.0f}s")
    finally:
        subprocess.run(["docker", "start", f"{LAB}-app2"], check=True, capture_output=True)
    back = wait_until(
        lambda: firing_or_pending(APP_DOWN_ALERT, "app2") is None, timeout=180, step=5
    )
    stayed = time.monotonic() - started
    assert back is not None, f"the alert stayed after app2 came back ({stayed:.0f}s)"


def test_only_the_monitoring_machine_reaches_the_exporters(machine: MachineGetter) -> None:
    monitor, client = machine("monitor1"), machine("client1")
    app1 = address("app1")
    assert tcp_probe(monitor, app1, port("exporters_node_port")) == CONNECTED
    assert tcp_probe(client, app1, port("exporters_node_port")) == TIMED_OUT
