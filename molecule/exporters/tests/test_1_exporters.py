"""Each machine runs the exporters of its groups, hardened, bound to its private address, and
each answers the monitoring machine with real values."""

from collections.abc import Callable

import pytest
from conftest import journal, wait_until
from exporter_client import ADDRESSES, ALL_UNITS, MONITOR, PORTS, REDIS, UNITS, fetch, scrape
from testinfra.host import Host


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_machines_groups_choose_what_runs(machine: Callable[[str], Host], name: str) -> None:
    host = machine(name)
    for unit in ALL_UNITS:
        service = host.service(unit)
        if unit in UNITS[name]:
            assert service.is_running, journal(host, unit)
            assert service.is_enabled, unit
        else:
            assert not service.is_running, f"{unit} runs on {name}"
    exporters = {unit for unit in UNITS[name] if unit in PORTS}
    assert {package for package in PORTS if host.package(package).is_installed} == exporters


@pytest.mark.parametrize("name", sorted(UNITS))
def test_exporters_listen_on_the_private_address_only(
    machine: Callable[[str], Host], name: str
) -> None:
    listening = machine(name).check_output("ss -Hltn").splitlines()
    for port in PORTS.values():
        local = {line.split()[3] for line in listening if line.split()[3].endswith(f":{port}")}
        expected = {f"{ADDRESSES[name]}:{port}"} if local else set()
        assert local == expected, f"{name} listens on {local} for port {port}"
    for unit in UNITS[name]:
        if unit in PORTS:
            assert f"{ADDRESSES[name]}:{PORTS[unit]}" in {line.split()[3] for line in listening}


@pytest.mark.parametrize("name", ["lb1", "redis1"])
def test_units_are_hardened_and_unprivileged(machine: Callable[[str], Host], name: str) -> None:
    host = machine(name)
    for unit in UNITS[name]:
        show = dict(
            line.split("=", 1)
            for line in host.check_output(
                f"systemctl show {unit} -p NoNewPrivileges -p ProtectSystem -p PrivateTmp"
                " -p CapabilityBoundingSet -p MainPID"
            ).splitlines()
        )
        assert show["NoNewPrivileges"] == "yes", unit
        assert show["ProtectSystem"] == "strict", unit
        assert show["PrivateTmp"] == "yes", unit
        assert show["CapabilityBoundingSet"] == "", unit
        user = host.check_output(f"ps -o user= -p {show['MainPID']}")
        assert user not in ("root", "prometheus", ""), f"{unit} runs as {user!r}"
        rating = host.check_output(f"systemd-analyze security {unit} | tail -1")
        assert rating.split()[-2] in ("SAFE", "OK"), rating
    # No two exporters share a uid: the Redis exporter's password stays its own.
    users = host.check_output(f"ps -o uid= -C {','.join(PORTS)}")
    assert len(users.split()) == len(set(users.split())) == len(set(UNITS[name]) & set(PORTS))


@pytest.mark.parametrize("name", sorted(UNITS))
def test_node_exporter_reports_the_machine(machine: Callable[[str], Host], name: str) -> None:
    series = scrape(machine(MONITOR), name, PORTS["prometheus-node-exporter"])
    assert series['node_systemd_unit_state{name="ssh.service",state="active",type="notify"}'] == 1
    assert series['node_scrape_collector_success{collector="systemd"}'] == 1
    assert series['node_scrape_collector_success{collector="filesystem"}'] == 1
    assert series["node_textfile_scrape_error"] == 0
    # Read from the machine's mount table, not the unit's read-only view of it.
    readonly = {
        key: value for key, value in series.items() if key.startswith("node_filesystem_readonly{")
    }
    assert readonly and set(readonly.values()) == {0}, readonly
    assert series["node_memory_MemTotal_bytes"] > 0
    assert series["node_load1"] >= 0


def test_nginx_exporter_counts_requests(machine: Callable[[str], Host]) -> None:
    lb, monitor = machine("lb1"), machine(MONITOR)
    port = PORTS["prometheus-nginx-exporter"]
    before = scrape(monitor, "lb1", port)
    assert before["nginx_up"] == 1, journal(lb, "prometheus-nginx-exporter")
    for _ in range(5):
        fetch(lb, "http://127.0.0.1:8081/healthz")
    after = scrape(monitor, "lb1", port)
    # The exporter's own scrape of stub_status counts too.
    assert after["nginx_http_requests_total"] >= before["nginx_http_requests_total"] + 5
    assert after["nginx_connections_active"] >= 1


def test_nginx_exporter_reports_nginx_down_and_back(machine: Callable[[str], Host]) -> None:
    lb, monitor = machine("lb1"), machine(MONITOR)
    port = PORTS["prometheus-nginx-exporter"]
    try:
        assert lb.run("systemctl stop nginx").rc == 0
        down = wait_until(lambda: scrape(monitor, "lb1", port).get("nginx_up") == 0, timeout=15)
        assert down is not None, "nginx_up stayed 1 with nginx stopped"
    finally:
        lb.run("systemctl start nginx")
    up = wait_until(lambda: scrape(monitor, "lb1", port).get("nginx_up") == 1, timeout=20)
    assert up is not None, journal(lb, "prometheus-nginx-exporter")


def test_redis_exporters_see_one_primary_and_its_replicas(machine: Callable[[str], Host]) -> None:
    monitor = machine(MONITOR)
    port = PORTS["prometheus-redis-exporter"]
    roles = {}
    for name in REDIS:
        series = scrape(monitor, name, port)
        assert series["redis_up"] == 1, journal(machine(name), "prometheus-redis-exporter")
        assert series['redis_exporter_last_scrape_error{err=""}'] == 0
        info = next(key for key in series if key.startswith("redis_instance_info{"))
        roles[name] = "master" if 'role="master"' in info else "replica"
        if roles[name] == "master":
            assert series["redis_connected_slaves"] == 2
        assert series["redis_memory_max_bytes"] == 256 * 1024 * 1024
    assert sorted(roles.values()) == ["master", "replica", "replica"], roles
