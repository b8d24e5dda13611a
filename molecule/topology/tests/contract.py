"""The values of the tiers' contract (group_vars/all/contract.yml) as the scenario's machines
see them: read through Ansible itself, so the tests follow whatever the inventory sets (the
topology scenario changes every shared value) instead of repeating a literal."""

import functools
import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import yaml
from conftest import answers
from testinfra.host import Host

ROOT = Path(__file__).resolve().parents[3]
# The contract's values a test needs, each read on the machine that owns it.
CONTRACT = {
    "app1": ["app_port", "app_redis_key_prefix", "redis_app_user"],
    "lb1": ["nginx_status_port", "exporters_nginx_port"],
    "redis1": [
        "redis_port",
        "redis_sentinel_port",
        "redis_sentinel_master_name",
        "exporters_node_port",
        "exporters_redis_exporter_port",
    ],
    "monitor1": ["monitoring_prometheus_port", "monitoring_alertmanager_port"],
}


@functools.cache
def host_values(host: str, names: tuple[str, ...]) -> dict[str, object]:
    """The templated values of `names` for `host`, with the scenario's inventory and the
    playbooks' group_vars (as site.yml sees them)."""
    expression = "{{ {" + ", ".join(f"'{name}': {name}" for name in names) + "} | to_json }}"
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            host,
            "--inventory",
            str(Path(inventory).parent),
            "--playbook-dir",
            str(ROOT),
            "--module-name",
            "ansible.builtin.debug",
            "--args",
            f"msg={expression}",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"},
    ).stdout
    result = json.loads(out)["plays"][0]["tasks"][0]["hosts"][host]["msg"]
    return json.loads(result) if isinstance(result, str) else result


@functools.cache
def contract() -> dict[str, object]:
    """Every value of CONTRACT, name -> value."""
    values: dict[str, object] = {}
    for host, names in CONTRACT.items():
        values.update(host_values(host, tuple(names)))
    return values


def port(name: str) -> int:
    """A port of the contract, e.g. port("app_port")."""
    return int(contract()[name])  # type: ignore[call-overload]


def address(name: str) -> str:
    """A machine's address, as the inventory gives it."""
    return str(host_values(name, ("ansible_host",))["ansible_host"])


def vip() -> str:
    """The balancers' virtual IP, as the inventory gives it (the address alone: the inventory
    writes it with its prefix length, e.g. 10.77.0.100/24)."""
    value = str(host_values("lb1", ("keepalived_vip",))["keepalived_vip"])
    return str(ipaddress.ip_interface(value).ip)


# The lab's vault (the lab's secrets are test values, kept in the clear).
SECRETS = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/vault.yml").read_text())
REDIS_MACHINES = ("redis1", "redis2", "redis3")


def sentinel_primary(machine: Callable[[str], Host], ask: Iterable[str] = REDIS_MACHINES):
    """(address, port) of the primary as the first Sentinel of `ask` that answers sees it
    (the contract's master name and port), or None when none answers."""
    for name in ask:
        out = answers(
            machine(name),
            f"redis-cli --no-auth-warning -p {port('redis_sentinel_port')} --user default "
            f"--pass {SECRETS['vault_redis_sentinel_password']} SENTINEL get-master-addr-by-name "
            f"{contract()['redis_sentinel_master_name']}",
        )
        if out and len(out.split()) == 2:
            address, primary_port = out.split()
            return address, int(primary_port)
    return None
