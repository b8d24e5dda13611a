"""Runs a scenario's own playbooks from its tests, as molecule runs the converge, and reads
the recap: for tests that change a variable, break a value on purpose, or converge again."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def run_playbook(
    pytestconfig: pytest.Config, playbook: str = "converge.yml", *extra: str, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Runs a playbook of the scenario (its file name) with the scenario's inventory and
    settings, plus `extra` arguments (--limit, --extra-vars, ...); never raises on failure."""
    scenario = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    command = str(Path(sys.executable).parent / "ansible-playbook")
    argv = [command, "--inventory", pytestconfig.getoption("ansible_inventory")]
    argv += [*extra, str(scenario / playbook)]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=os.environ.get("MOLECULE_PROJECT_DIRECTORY"),
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
    )


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """Machine name -> counters (ok, changed, failed, ...) from an ansible-playbook recap."""
    recap = {}
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    for name, counters in re.findall(r"^\s*(\S+)\s*:\s*(ok=\d+.*)$", plain, re.MULTILINE):
        recap[name] = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
    return recap
