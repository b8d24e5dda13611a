"""Runs a scenario's own playbooks from its tests, as molecule runs the converge, and reads
the recap: for tests that change a variable, break a value on purpose, or converge again.
assert_rejected_before_any_change is every role's "a bad value fails before any change"."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testinfra.host import Host


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


def flat_output(played: subprocess.CompletedProcess) -> str:
    """A run's stdout and stderr on one line, whitespace collapsed and YAML's doubled quotes
    undone, so a message wrapped by Ansible is found whole."""
    return " ".join((played.stdout + played.stderr).split()).replace("''", "'")


# Files a run could have changed on a machine: whatever is newer than a marker the check
# leaves just before the run (the role's config, units, releases and scripts all live here).
CHANGED_FILES = (
    "find /etc /opt /usr/local /var/lib/systemd/system -xdev -not -type d"
    " -newer {marker} -print 2>/dev/null | sort"
)


def assert_rejected_before_any_change(
    pytestconfig: pytest.Config,
    machine: Host,
    name: str,
    bad_value: dict,
    messages: list[str],
    playbook: str = "converge.yml",
    timeout: int = 300,
    before_task: str = "",
) -> None:
    """Runs `playbook` on machine `name` alone with one bad value as extra vars and asserts
    that it fails with every one of `messages` (the variable and what to change), that the
    recap shows no change and one failure, and that no file on the machine changed; with
    `before_task` (e.g. "keepalived : Install keepalived"), that it stopped before that task."""
    marker = f"/run/bad-value-{os.getpid()}"
    machine.check_output(f"touch {marker}")
    try:
        played = run_playbook(
            pytestconfig,
            playbook,
            "--limit",
            name,
            "--extra-vars",
            json.dumps(bad_value),
            timeout=timeout,
        )
        changed_files = machine.check_output(CHANGED_FILES.format(marker=marker))
    finally:
        machine.run(f"rm -f {marker}")
    output = flat_output(played)
    assert played.returncode != 0, output[-3000:]
    for message in messages:
        assert message in output, f"{message!r} not in: {output[-3000:]}"
    if before_task:
        assert f"TASK [{before_task}" not in output, output[-3000:]
    recap = play_recap(played.stdout)
    assert set(recap) == {name}, recap
    assert recap[name]["changed"] == 0, recap
    assert recap[name]["failed"] == 1, recap
    assert changed_files == "", f"files changed on {name} by a rejected run:\n{changed_files}"
