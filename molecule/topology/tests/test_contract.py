"""The tiers' contract, changed in one place: the scenario's inventory sets every shared value
(ports, the Redis users, the key prefix, Sentinel's master name) away from its default
(molecule/topology/inventory/group_vars/lab/contract.yml). Every tier must follow: the stack
serves (the other test files), every port is let through from exactly the machines that need
it, and nothing is left on a default port.

The tests read the values through Ansible (contract.py), so they hold for any values."""

import socket
from collections.abc import Callable

import pytest
import yaml
from conftest import CONNECTED, TIMED_OUT, tcp_probe
from contract import ROOT, SECRETS, address, contract, host_values, port, sentinel_primary
from testinfra.host import Host

MachineGetter = Callable[[str], Host]
# The contract's own values, before the scenario's inventory changes them.
DEFAULTS = yaml.safe_load((ROOT / "group_vars/all/contract.yml").read_text())
# A machine of each group, to connect to and from.
ONE_OF = {"lb": "lb1", "app": "app1", "redis": "redis1", "monitoring": "monitor1"}


def controller_probe(target: str, tcp_port: int) -> str:
    """The TCP_PROBE outcome from the controller, which stands in the admin network."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return str(probe.connect_ex((target, tcp_port)))


def test_every_shared_value_differs_from_its_default() -> None:
    """Else the scenario would not prove that the value flows."""
    same = {name: value for name, value in contract().items() if DEFAULTS.get(name) == value}
    assert not same, f"the scenario leaves these at their defaults: {same}"


def test_each_port_is_let_through_from_exactly_its_peers(machine: MachineGetter) -> None:
    """Every TCP service of the firewall map, at the port the contract gives it: a machine of
    each group it names connects, the client (of no tier) is dropped."""
    services = host_values("app1", ("common_firewall_services",))["common_firewall_services"]
    assert isinstance(services, dict)
    client = machine("client1")
    wrong = []
    checked = 0
    for group, entries in services.items():
        target = address(ONE_OF.get(group, "app1"))
        for service in entries:
            if service["proto"] != "tcp":
                continue
            tcp_port = int(service["port"])
            sources = ["client1"] if service["from"] == "any" else service["from"]
            for source in sources:
                outcome = (
                    controller_probe(target, tcp_port)
                    if source == "admin"
                    else tcp_probe(machine(ONE_OF.get(source, source)), target, tcp_port)
                )
                if outcome != CONNECTED:
                    wrong.append(f"{service['name']} {target}:{tcp_port} from {source}: {outcome}")
            if service["from"] != "any":
                outcome = tcp_probe(client, target, tcp_port)
                if outcome != TIMED_OUT:
                    wrong.append(f"{service['name']} {target}:{tcp_port} from client1: {outcome}")
            checked += 1
    assert checked >= 10, services
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("app_port", "app1"),
        ("nginx_status_port", "lb1"),
        ("redis_port", "redis1"),
        ("redis_sentinel_port", "redis1"),
        ("exporters_node_port", "app1"),
        ("exporters_nginx_port", "lb1"),
        ("exporters_redis_exporter_port", "redis1"),
        ("monitoring_prometheus_port", "monitor1"),
        ("monitoring_alertmanager_port", "monitor1"),
    ],
)
def test_the_service_moved_to_its_port(machine: MachineGetter, name: str, owner: str) -> None:
    """Listening on the contract's port, and nothing left on the default one."""
    listening = machine(owner).run("ss -Hltn").stdout.split("\n")
    ports = {int(line.split()[3].rsplit(":", 1)[1]) for line in listening if line.strip()}
    assert port(name) in ports, (name, sorted(ports))
    assert int(DEFAULTS[name]) not in ports, (name, sorted(ports))


def redis_cli(machine: MachineGetter, *args: str, user: str = "default", secret: str = "") -> str:
    """A command to the Redis primary (found through Sentinel, under the contract's master
    name and ports), as `user` with the vault's `secret` (the admin's by default); the output,
    errors included."""
    primary = sentinel_primary(machine, ask=["redis1"])
    assert primary is not None, f"no master under {contract()['redis_sentinel_master_name']}"
    assert primary[1] == port("redis_port")
    password = SECRETS[secret or "vault_redis_password"]
    return redis1(
        machine,
        f"--user {user} --pass {password} -h {primary[0]} -p {primary[1]} " + " ".join(args),
    )


def redis1(machine: MachineGetter, args: str) -> str:
    result = machine("redis1").run(f"redis-cli --no-auth-warning {args}")
    return result.stdout + result.stderr


def test_sessions_are_kept_under_the_prefix_as_the_app_user(machine: MachineGetter) -> None:
    """A session written through the VIP lands under the app's key prefix, and the app's ACL
    user (the contract's name) may touch exactly those keys."""
    prefix, user = contract()["app_redis_key_prefix"], contract()["redis_app_user"]
    vip = str(host_values("lb1", ("keepalived_vip",))["keepalived_vip"]).split("/")[0]
    posted = machine("client1").run(
        "python3 -c 'import json, ssl, sys, urllib.request;"
        ' request = urllib.request.Request(sys.argv[1], data=json.dumps({"note": "contract"})'
        '.encode(), headers={"Content-Type": "application/json"}, method="POST");'
        " print(urllib.request.urlopen(request, context=ssl._create_unverified_context(),"
        " timeout=10).status)' " + f"https://{vip}/api/session/notes"
    )
    assert posted.rc == 0 and posted.stdout.strip() in ("200", "201"), posted.stderr
    keys = redis_cli(machine, "--scan", "--pattern", f"'{prefix}:*'").split()
    assert keys, f"no key under {prefix}:"
    as_app = {"user": str(user), "secret": "vault_redis_app_password"}
    written = redis_cli(machine, "SET", f"{prefix}:contract-probe", "1", "EX", "60", **as_app)
    assert written.strip() == "OK", written
    refused = redis_cli(machine, "SET", f"not-{prefix}:contract-probe", "1", **as_app)
    assert "NOPERM" in refused, refused
