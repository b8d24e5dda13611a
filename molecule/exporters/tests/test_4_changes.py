"""A change restarts only what it concerns; a bad value stops the role before any change."""

from collections.abc import Callable

import pytest
from exporter_client import UNITS
from playbooks import assert_rejected_before_any_change, play_recap, run_playbook
from testinfra.host import Host


def main_pids(host: Host) -> dict[str, str]:
    return {
        unit: host.check_output(f"systemctl show -p MainPID --value {unit}")
        for unit in UNITS["lb1"]
    }


def test_a_changed_interval_restarts_the_script_only(
    pytestconfig: pytest.Config, machine: Callable[[str], Host]
) -> None:
    lb = machine("lb1")
    before = main_pids(lb)
    try:
        played = run_playbook(
            pytestconfig, "exporters.yml", "--limit", "lb1", "-e", "exporters_textfile_interval=3"
        )
        assert played.returncode == 0, played.stdout[-3000:]
        assert play_recap(played.stdout)["lb1"]["changed"] == 2  # the script, its restart
        after = main_pids(lb)
        assert lb.file("/usr/local/libexec/exporters/webstack-vip-metrics").contains(
            "^    sleep 3$"
        )
        restarted = {unit for unit in before if before[unit] != after[unit]}
        assert restarted == {"webstack-vip-metrics"}, (before, after)
    finally:
        back = run_playbook(pytestconfig, "exporters.yml", "--limit", "lb1")
    assert back.returncode == 0, back.stdout[-3000:]
    assert lb.file("/usr/local/libexec/exporters/webstack-vip-metrics").contains("^    sleep 2$")


CASES = {
    "no Redis exporter password": (
        "redis1",
        {"exporters_redis_password": ""},
        "exporters_redis_password is missing or unusable",
    ),
    "a VIP without its prefix": (
        "lb1",
        {"exporters_keepalived_vips": ["10.78.7.100"]},
        "list the VIPs with their prefix",
    ),
    "a port taken twice": (
        "lb1",
        {"exporters_nginx_port": 9100},
        "must differ and lie in 1-65535",
    ),
}


@pytest.mark.parametrize(("name", "bad_value", "message"), CASES.values(), ids=CASES.keys())
def test_bad_value_fails_before_any_change(
    pytestconfig: pytest.Config,
    machine: Callable[[str], Host],
    name: str,
    bad_value: dict,
    message: str,
) -> None:
    assert_rejected_before_any_change(
        pytestconfig, machine(name), name, bad_value, [message], playbook="exporters.yml"
    )
