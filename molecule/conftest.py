"""Fixtures shared by every scenario's testinfra tests."""

import functools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import testinfra
from testinfra.host import Host

# Tries a TCP connection from the machine it runs on and prints the outcome as an errno:
# 0 connected, 111 refused (the port is reachable, nothing listens), 11 timed out after 2 s
# (dropped on the way, as a firewall does).
TCP_PROBE = (
    "python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(2);"
    " print(s.connect_ex((sys.argv[1], int(sys.argv[2]))))' {address} {port}"
)
CONNECTED, REFUSED, TIMED_OUT = "0", "111", "11"

T = TypeVar("T")


def _plain(value: Any) -> Any:
    """A value of `ansible-inventory --list` without its "unsafe" wrapping."""
    if isinstance(value, dict) and set(value) == {"__ansible_unsafe"}:
        return value["__ansible_unsafe"]
    return value


def inventory_hostvars(inventory: str | None = None) -> dict[str, dict[str, Any]]:
    """Machine name -> its connection variables (ansible_*) as plain values, from
    `ansible-inventory --list` of the scenario's inventory (molecule's, unless given)."""
    # Molecule's inventory directory, the one it gives testinfra (--ansible-inventory).
    path = inventory or os.path.dirname(os.environ["MOLECULE_INVENTORY_FILE"])
    return _inventory_hostvars(os.path.realpath(path))


@functools.cache
def _inventory_hostvars(inventory: str) -> dict[str, dict[str, Any]]:
    """Read once per inventory, however its path is spelled."""
    listing = json.loads(subprocess.check_output(["ansible-inventory", "--list", "-i", inventory]))
    return {
        name: {key: _plain(value) for key, value in hostvars.items() if key.startswith("ansible_")}
        for name, hostvars in listing["_meta"]["hostvars"].items()
    }


def addresses() -> dict[str, str]:
    """Machine name -> its private address, as the inventory gives it (never written in tests)."""
    return {name: hostvars["ansible_host"] for name, hostvars in inventory_hostvars().items()}


@pytest.fixture(scope="session")
def connection_inventory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The scenario's inventory reduced to how each machine is reached, as plain values.

    testinfra reads `ansible-inventory --list` but templates nothing, and values an inventory
    plugin computes (the lab's addresses) come wrapped as "unsafe": this is what it can read.
    """
    hosts = inventory_hostvars(request.config.option.ansible_inventory)
    path = tmp_path_factory.mktemp("inventory") / "machines.json"
    path.write_text(json.dumps({"all": {"hosts": hosts}}))
    return path


@pytest.fixture(scope="session")
def machine(connection_inventory: Path) -> Callable[[str], Host]:
    """machine("app1") is the scenario's machine of that inventory name."""
    cache: dict[str, Host] = {}

    def get(name: str) -> Host:
        if name not in cache:
            cache[name] = testinfra.get_host(
                f"ansible://{name}", ansible_inventory=str(connection_inventory)
            )
        return cache[name]

    return get


def tcp_probe(source: Host, address: str, port: int) -> str:
    """The outcome of a TCP connection from `source` to address:port (see TCP_PROBE)."""
    return source.run(TCP_PROBE.format(address=address, port=port)).stdout.strip()


def tcp_connects(source: Host, address: str, port: int) -> bool:
    """Whether `source` can open a TCP connection to address:port."""
    return tcp_probe(source, address, port) == CONNECTED


def journal(host: Host, unit: str, lines: int = 30) -> str:
    """The last lines of a unit's journal, for failure messages."""
    return host.run(f"journalctl -u {unit} --no-pager -n {lines}").stdout


def answers(host: Host, command: str) -> str | None:
    """The command's output, or None when it fails or the machine does not answer (stopped,
    booting, killed)."""
    try:
        result = host.run(command)
    except RuntimeError:
        return None
    return result.stdout if result.rc == 0 else None


def wait_for(
    what: str,
    check: Callable[[], T],
    timeout: float,
    step: float = 0.5,
    journal_of: tuple[Host, str] | None = None,
) -> T:
    """Polls `check` until it returns something true, and returns that; after `timeout` seconds
    fails the test, saying what it waited for (with the unit's journal, when given)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"gave up after {timeout:.0f} s waiting until {what}"
            if journal_of is not None:
                message += "\n" + journal(*journal_of)
            raise AssertionError(message)
        time.sleep(step)


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.2) -> float | None:
    """Polls `condition` until it holds; returns the seconds it took, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(step)
    return None
