"""The monitoring machine on its own: services up and hardened, bound where they should be,
files readable by Prometheus only, the arguments of the role in effect."""

from collections.abc import Callable

import pytest
from conftest import REFUSED, journal, tcp_probe
from testinfra.host import Host
from watch import ALERTMANAGER_PORT, PROMETHEUS_PORT, Monitoring, scenario_vars

UNITS = {
    "prometheus": "/var/lib/prometheus/metrics2",
    "prometheus-alertmanager": "/var/lib/prometheus/alertmanager",
}


@pytest.fixture(scope="module")
def monitoring(machine: Callable[[str], Host]) -> Monitoring:
    return Monitoring.of(machine)


def _listening(host: Host, port: int) -> set[str]:
    return {
        socket
        for socket in host.socket.get_listening_sockets()
        if socket.rsplit(":", 1)[-1] == str(port)
    }


@pytest.mark.parametrize("unit", UNITS)
def test_service_runs_and_starts_at_boot(monitoring: Monitoring, unit: str) -> None:
    service = monitoring.mon.service(unit)
    assert service.is_running, f"{unit} is not running; journal:\n{journal(monitoring.mon, unit)}"
    assert service.is_enabled


def test_prometheus_listens_on_the_private_address_only(monitoring: Monitoring) -> None:
    # Prometheus 2.42 takes one listen address: the private one, not localhost (see README).
    wanted = {f"tcp://{monitoring.address}:{PROMETHEUS_PORT}"}
    assert _listening(monitoring.mon, PROMETHEUS_PORT) == wanted
    assert tcp_probe(monitoring.mon, "127.0.0.1", PROMETHEUS_PORT) == REFUSED


def test_alertmanager_listens_on_the_private_address_and_localhost_without_cluster(
    monitoring: Monitoring,
) -> None:
    wanted = {
        f"tcp://{monitoring.address}:{ALERTMANAGER_PORT}",
        f"tcp://127.0.0.1:{ALERTMANAGER_PORT}",
    }
    assert _listening(monitoring.mon, ALERTMANAGER_PORT) == wanted
    assert not _listening(monitoring.mon, 9094), "the cluster (gossip) port is open"
    assert monitoring.alertmanager("/api/v2/status")["cluster"]["status"] == "disabled"


@pytest.mark.parametrize("unit, writable", UNITS.items())
def test_unit_is_hardened(monitoring: Monitoring, unit: str, writable: str) -> None:
    wanted = {
        "User": "prometheus",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": writable,
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictSUIDSGID": "yes",
        "MemoryDenyWriteExecute": "yes",
        "DropInPaths": f"/etc/systemd/system/{unit}.service.d/hardening.conf",
    }
    shown = monitoring.mon.check_output(f"systemctl show {unit} -p " + ",".join(wanted))
    assert dict(line.split("=", 1) for line in shown.splitlines()) == wanted


def test_configuration_is_readable_by_prometheus_only(monitoring: Monitoring) -> None:
    for path in (
        "/etc/prometheus/prometheus.yml",
        "/etc/prometheus/alertmanager.yml",
        "/etc/prometheus/rules/webstack.rules.yml",
    ):
        found = monitoring.mon.file(path)
        assert (found.user, found.group, found.mode) == ("root", "prometheus", 0o640), path


def test_retention_and_addresses_are_in_effect(monitoring: Monitoring) -> None:
    variables = scenario_vars()
    flags = monitoring.prometheus("/api/v1/status/flags")
    assert flags["storage.tsdb.retention.time"] == variables["monitoring_prometheus_retention_time"]
    # Prometheus reads and shows sizes in powers of 1024: its MB is a MiB.
    size = variables["monitoring_prometheus_retention_size"]
    assert flags["storage.tsdb.retention.size"] == size.replace("B", "iB")
    assert flags["web.listen-address"] == f"{monitoring.address}:{PROMETHEUS_PORT}"
    assert flags["storage.tsdb.path"] == "/var/lib/prometheus/metrics2/"
