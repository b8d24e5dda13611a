"""What the monitoring tests share: the two machines, Prometheus's and Alertmanager's APIs (asked
from the controller, as an operator's browser would), and converges with other values."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from playbooks import run_playbook
from testinfra.host import Host

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093


def scenario_vars() -> dict[str, Any]:
    """The role variables the scenario sets for the monitoring group (molecule.yml)."""
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    settings = yaml.safe_load((scenario / "molecule.yml").read_text())
    return settings["provisioner"]["inventory"]["group_vars"]["monitoring"]


@dataclass
class Monitoring:
    """The monitoring machine and the machine it watches, with the APIs of the monitoring one."""

    mon: Host
    node: Host
    address: str
    node_address: str

    def get(self, port: int, path: str) -> Any:
        """The JSON answer of GET http://<mon1>:port/path."""
        url = f"http://{self.address}:{port}{path}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)

    def prometheus(self, path: str) -> Any:
        """The `data` of a Prometheus API answer (fails unless its status is success)."""
        answer = self.get(PROMETHEUS_PORT, path)
        assert answer["status"] == "success", answer
        return answer["data"]

    def alertmanager(self, path: str) -> Any:
        return self.get(ALERTMANAGER_PORT, path)

    def targets(self) -> dict[tuple[str, str], dict]:
        """(job, instance) -> the active target, as Prometheus reports it."""
        active = self.prometheus("/api/v1/targets?state=active")["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]): t for t in active}

    def alerts(self, name: str) -> list[dict]:
        """Prometheus's alerts of that name (pending and firing)."""
        alerts = self.prometheus("/api/v1/alerts")["alerts"]
        return [alert for alert in alerts if alert["labels"]["alertname"] == name]

    def metric(self, port: int, name: str) -> float:
        """The value of an unlabelled metric that Prometheus or Alertmanager exports."""
        url = f"http://{self.address}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        assert found, f"{name} not in {url}"
        return float(found.group(1))

    def main_pid(self, unit: str) -> str:
        return self.mon.check_output(f"systemctl show --property=MainPID --value {unit}")

    @classmethod
    def of(cls, machine: Callable[[str], Host]) -> Monitoring:
        """The scenario's machines, from the shared `machine` fixture."""
        mon, node = machine("mon1"), machine("node1")
        return cls(
            mon,
            node,
            mon.ansible.get_variables()["ansible_host"],
            node.ansible.get_variables()["ansible_host"],
        )


def run_converge(pytestconfig: pytest.Config, **extra_vars: Any) -> subprocess.CompletedProcess:
    """Runs the scenario's converge playbook as molecule does, with these extra vars."""
    return run_playbook(
        pytestconfig, "converge.yml", "--extra-vars", json.dumps(extra_vars), timeout=600
    )
