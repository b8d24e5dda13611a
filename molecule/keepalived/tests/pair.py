"""Reaching the balancers as a pair: SSH to each, docker to stop and start whole machines.

Each machine is reached with an SSH connection of its own (one master connection per machine,
dropped within 3 s when the machine dies), so a stopped machine never hangs a test.
"""

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import testinfra
from conftest import journal, wait_until
from testinfra.utils.ansible_runner import AnsibleRunner

SCENARIO = os.environ["MOLECULE_SCENARIO_NAME"]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
STEP = 0.2  # seconds between two looks at the machines
CAP = 30.0  # no wait is longer than this, beyond the preemption delay


@dataclass
class Balancer:
    """One balancer machine: its name, address, SSH access and container."""

    name: str
    address: str
    key: str
    up: bool = True
    host: testinfra.host.Host = field(init=False)

    def __post_init__(self) -> None:
        self.control = f"/tmp/{SCENARIO}-{self.name}.ssh"
        self.ssh_args = (
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
            " -o ConnectTimeout=3 -o ServerAliveInterval=1 -o ServerAliveCountMax=2"
            f" -o ControlMaster=auto -o ControlPersist=30s -o ControlPath={self.control}"
        )
        self.host = testinfra.get_host(
            f"ssh://root@{self.address}", ssh_identity_file=self.key, ssh_extra_args=self.ssh_args
        )

    @property
    def container(self) -> str:
        return f"molecule-{SCENARIO}-{self.name}"

    def addresses(self) -> set[str]:
        """The IPv4 addresses the machine holds now (empty when it is down)."""
        if not self.up:
            return set()
        out = self.host.check_output("ip -4 -br addr show")
        return {word.split("/")[0] for line in out.splitlines() for word in line.split()[2:]}

    def journal(self, unit: str = "keepalived", lines: int = 25) -> str:
        return journal(self.host, unit, lines) if self.up else f"({self.name} is down)"

    def forget_connection(self) -> None:
        """Close the SSH master connection (before the machine goes away)."""
        subprocess.run(
            ["ssh", "-o", f"ControlPath={self.control}", "-O", "exit", self.address],
            capture_output=True,
            timeout=10,
            check=False,
        )


def waited(condition: Callable[[], bool], timeout: float, explain: Callable[[], str]) -> float:
    """Seconds until condition() holds, looking every STEP; fails with explain() at timeout."""
    seconds = wait_until(condition, timeout, STEP)
    if seconds is None:
        pytest.fail(f"not within {timeout:.0f} s: {explain()}")
    return seconds


def settings() -> dict:
    """The scenario's inventory variables, as the balancers see them."""
    return AnsibleRunner(INVENTORY).get_variables("lb1")


def balancers() -> dict[str, Balancer]:
    """The machines of the group lb, by name."""
    runner = AnsibleRunner(INVENTORY)
    found = {}
    for name in runner.get_hosts("lb"):
        hostvars = runner.get_variables(name)
        found[name] = Balancer(
            name=name, address=hostvars["ansible_host"], key=hostvars["ansible_private_key_file"]
        )
    return found
