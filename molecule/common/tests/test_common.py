"""The common role: kernel tuning, limits, journal, and a firewall that drops what a tier
does not serve. Firewall checks connect between the scenario's own machines only."""

from collections.abc import Callable, Iterator

import pytest
from conftest import REFUSED, TIMED_OUT, addresses, tcp_connects, tcp_probe, wait_until
from testinfra.host import Host

APP = addresses()["app1"]
LB = addresses()["lb1"]
MACHINES = ["lb1", "app1", "client1"]


@pytest.fixture(scope="module")
def app_listener(machine: Callable[[str], Host]) -> Iterator[None]:
    """A throwaway listener on app1's app port and on a port no tier serves, so the firewall
    is all that decides who gets through."""
    app = machine("app1")
    for port in (8000, 9999):
        unit = f"probe-{port}"
        app.run(f"systemctl stop {unit}; systemctl reset-failed {unit}")
        started = app.run(f"systemd-run --unit {unit} python3 -m http.server {port} --bind {APP}")
        assert started.rc == 0, started.stderr
        listening = wait_until(lambda port=port: tcp_connects(app, APP, port), timeout=10)
        assert listening is not None, f"nothing listens on {APP}:{port}"
    yield
    app.run("systemctl stop probe-8000 probe-9999")


@pytest.mark.parametrize("name", MACHINES)
def test_kernel_and_limits_are_set(machine: Callable[[str], Host], name: str) -> None:
    host = machine(name)
    sysctl = host.file("/etc/sysctl.d/60-common.conf")
    assert sysctl.contains("^net.core.somaxconn = 4096$")
    assert sysctl.contains("^net.ipv4.tcp_tw_reuse = 1$")
    assert sysctl.contains("^net.ipv4.ip_local_port_range = 1024 65000$")
    # Raised to 1048576 at least, never lowered below what the kernel had (a container reads
    # the host's value).
    file_max = int(sysctl.content_string.split("fs.file-max = ", 1)[1].split()[0])
    assert file_max == max(1048576, int(host.file("/proc/sys/fs/file-max").content_string))
    # A container cannot apply kernel settings; the lab sets the net.* ones when it creates
    # the machine. They must be live, with the values the role wrote.
    written = dict(
        line.split(" = ", 1) for line in sysctl.content_string.splitlines() if " = " in line
    )
    live = {
        key: " ".join(host.check_output(f"sysctl -n {key}").split())
        for key in written
        if key.startswith("net.")
    }
    assert live == {key: written[key] for key in live}
    assert len(live) >= 4, f"too few net.* settings checked: {sorted(live)}"
    limit = host.run("systemctl show -p DefaultLimitNOFILESoft --value").stdout.strip()
    assert limit == "65536", "systemd was not re-executed with the new default limit"
    assert host.file("/etc/systemd/journald.conf.d/50-webstack.conf").contains("SystemMaxUse=512M")


@pytest.mark.parametrize("name", MACHINES)
def test_firewall_is_loaded_and_drops_by_default(machine: Callable[[str], Host], name: str) -> None:
    host = machine(name)
    assert host.service("nftables").is_enabled
    ruleset = host.run("nft list chain inet webstack input")
    assert ruleset.rc == 0, ruleset.stderr
    assert "policy drop" in ruleset.stdout


def test_balancer_reaches_app_port(machine: Callable[[str], Host], app_listener: None) -> None:
    assert tcp_connects(machine("lb1"), APP, 8000)


def test_client_cannot_reach_app_port(machine: Callable[[str], Host], app_listener: None) -> None:
    assert tcp_probe(machine("client1"), APP, 8000) == TIMED_OUT


def test_nobody_reaches_a_port_no_tier_serves(
    machine: Callable[[str], Host], app_listener: None
) -> None:
    assert machine("app1").socket(f"tcp://{APP}:9999").is_listening
    assert tcp_probe(machine("lb1"), APP, 9999) == TIMED_OUT
    assert tcp_probe(machine("client1"), APP, 9999) == TIMED_OUT


def test_client_reaches_balancer_web_port(machine: Callable[[str], Host]) -> None:
    """Port 80 of the balancer is open to anyone: with nothing listening there yet, the
    client is refused at once, where a dropped port would time out."""
    assert tcp_probe(machine("client1"), LB, 80) == REFUSED


def test_ssh_only_from_the_admin_network(machine: Callable[[str], Host]) -> None:
    """SSH answers the controller (the admin network; the next test logs in to every
    machine) and no machine of the lab: port 22 is dropped, not refused."""
    assert tcp_probe(machine("lb1"), APP, 22) == TIMED_OUT
    assert tcp_probe(machine("client1"), LB, 22) == TIMED_OUT


def test_ssh_still_reaches_every_machine(machine: Callable[[str], Host]) -> None:
    for name in MACHINES:
        assert machine(name).run("true").rc == 0
