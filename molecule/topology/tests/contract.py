"""The values of the tiers' contract (group_vars/all/contract.yml) as the scenario's machines
see them: read through Ansible itself, so the tests follow whatever the inventory sets (the
topology scenario changes every shared value) instead of repeating a literal."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

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
