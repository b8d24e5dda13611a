"""Reaching the balancers as a pair: SSH to each, docker to stop and start whole machines.

Each machine is reached with an SSH connection of its own (one master connection per machine,
dropped within 3 s when the machine dies), so a stopped machine never hangs a test. A machine
that is being stopped or killed is looked at through docker instead, until docker says its
container has stopped: its sshd goes away before its network does.
"""

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from subprocess import DEVNULL

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
    # The `docker stop` (or `docker wait`, after a kill) that has not returned yet.
    going_down: subprocess.Popen | None = None
    # How many times it was seen through docker while going down (the last take_down).
    seen_going_down: int = 0
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

    def take_down(self, crash: bool = False) -> None:
        """Stop the machine's container cleanly (docker stop), or kill it (a crash), and
        return at once; the machine counts as up until docker says the container stopped."""
        self.forget_connection()
        self.seen_going_down = 0
        if crash:
            subprocess.run(
                ["docker", "kill", self.container], check=True, timeout=60, stdout=DEVNULL
            )
        command = "wait" if crash else "stop"
        self.going_down = subprocess.Popen(["docker", command, self.container], stdout=DEVNULL)

    def is_down(self) -> bool:
        """Whether the machine is down (for a machine being taken down: docker has returned)."""
        if self.going_down is not None and self.going_down.poll() is not None:
            self.going_down = None
            self.up = False
        return not self.up

    def wait_down(self, timeout: float = 60) -> None:
        """Wait until a machine being taken down is down."""
        if self.going_down is not None:
            self.going_down.wait(timeout=timeout)
        self.is_down()

    def addresses(self) -> set[str]:
        """The IPv4 addresses the machine holds now (empty when it is down)."""
        if self.is_down():
            return set()
        if self.going_down is None:
            out = self.host.check_output("ip -4 -br addr show")
        else:
            # Being taken down: sshd may be gone, the network namespace not yet. docker exec
            # works until the container's processes are gone, and its network with them.
            seen = subprocess.run(
                ["docker", "exec", self.container, "ip", "-4", "-br", "addr", "show"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            out = seen.stdout if seen.returncode == 0 else ""
            self.seen_going_down += seen.returncode == 0
        return {word.split("/")[0] for line in out.splitlines() for word in line.split()[2:]}

    def watch_for(self, address: str, timeout: float = CAP) -> subprocess.Popen:
        """Starts watching, on the machine itself (docker exec, every 10 ms), for `address`
        to appear on it; the process prints the wall time it appeared (containers share the
        host's clock), or nothing after `timeout`. Returns once the watch runs."""
        script = (
            f"end=$(( $(date +%s) + {int(timeout)} )); echo watching;"
            f" while [ $(date +%s) -lt $end ]; do"
            f" if ip -4 -o addr show | grep -qF ' {address}/'; then date +%s.%N; exit 0; fi;"
            " sleep 0.01; done; exit 1"
        )
        watcher = subprocess.Popen(
            ["docker", "exec", self.container, "sh", "-c", script],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert watcher.stdout is not None and watcher.stdout.readline().strip() == "watching"
        return watcher

    def journal(self, unit: str = "keepalived", lines: int = 25) -> str:
        if self.is_down() or self.going_down is not None:
            return f"({self.name} is down or going down)"
        return journal(self.host, unit, lines)

    def forget_connection(self) -> None:
        """Close the SSH master connection (before the machine goes away)."""
        subprocess.run(
            ["ssh", "-o", f"ControlPath={self.control}", "-O", "exit", self.address],
            capture_output=True,
            timeout=10,
            check=False,
        )


def appeared_after(watcher: subprocess.Popen, since: float) -> float | None:
    """Seconds from the wall time `since` until the watched address appeared (None: never)."""
    out, _ = watcher.communicate(timeout=CAP + 30)
    return float(out) - since if watcher.returncode == 0 and out.strip() else None


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
