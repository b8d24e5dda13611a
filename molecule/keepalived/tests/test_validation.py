"""A bad value stops the role before it changes anything, with a message that says what to fix.

Each case runs the converge playbook on lb1 only (the checks read the peers' settings from the
inventory, so --limit hides nothing) with one bad value as an extra var: the run must fail in
the role's checks, before its first task that can change a machine, with no file changed on
lb1 (playbooks.assert_rejected_before_any_change). The first case gathers
lb1's facts and caches them; the others reuse them, so each run is little more than the checks.
"""

import os
import shutil
from collections.abc import Callable, Iterator

import pytest
from playbooks import assert_rejected_before_any_change
from testinfra.host import Host

# The first task of the role that can change a machine; a failed check must come before it.
FIRST_CHANGE = "keepalived : Install keepalived"

# Case -> (bad value, what the message must say: the variable and what to change).
CASES = {
    "duplicate priorities": (
        {"keepalived_priority": 150},  # an extra var: every balancer gets 150
        [
            "Priorities {'lb1': 150, 'lb2': 150} must lie in 1-254 and be unique in the group 'lb'",
            "set a different keepalived_priority in each balancer's host_vars",
        ],
    ),
    "a VIP outside the interface's subnet": (
        {"keepalived_vip": "10.99.0.1/24"},
        [
            "VIP 10.99.0.1/24 (VI_1) must be",
            "a usable host address of eth0's subnet 10.78.5.0/24",
            "change keepalived_vip",
        ],
    ),
    "a router id out of range": (
        {"keepalived_virtual_router_id": 300},
        ["Virtual router ids 300, 52 must lie in 1-255", "change keepalived_virtual_router_id"],
    ),
    "no unicast peers": (
        {"keepalived_unicast_peers": []},
        ["keepalived_unicast_peers [] must list every other balancer of 'lb' (10.78.5.12)"],
    ),
    "a unicast peers list without the other balancer": (
        {"keepalived_unicast_peers": ["10.78.5.13"]},
        [
            "keepalived_unicast_peers ['10.78.5.13'] must list every other balancer"
            " of 'lb' (10.78.5.12)"
        ],
    ),
    "a fractional advert interval with VRRPv2": (
        {
            "keepalived_vrrp_version": 2,
            "keepalived_advert_int": 0.2,
            "keepalived_auth_pass": "molecule",
        },
        [
            "keepalived_advert_int 0.2 does not fit VRRPv2: VRRPv2 takes whole seconds 1-255;"
            " set keepalived_vrrp_version: 3",
        ],
    ),
    "VRRPv2 without a password": (
        {"keepalived_vrrp_version": 2, "keepalived_advert_int": 1},
        ["keepalived_auth_pass must be set for VRRPv2", "put it in the vault"],
    ),
    "a password with VRRPv3": (
        {"keepalived_auth_pass": "molecule"},
        ["VRRPv3 has no authentication: leave keepalived_auth_pass empty or use VRRPv2."],
    ),
    "a check timeout longer than the fall window": (
        {"keepalived_check_timeout": 30},
        ["keepalived_check_timeout (30 s) is longer than the whole fall window"],
    ),
    "a tracked unit that is not a service": (
        {"keepalived_track_unit": "/usr/sbin/nginx"},
        ["keepalived_track_unit '/usr/sbin/nginx' must be a systemd service name"],
    ),
    "a router id that is not a number": (
        {"keepalived_virtual_router_id": "fifty-one"},
        [
            "Validation of arguments failed",
            "argument 'keepalived_virtual_router_id' is of type str"
            " and we were unable to convert to int",
        ],
    ),
}


@pytest.fixture(scope="module", autouse=True)
def cached_facts() -> Iterator[None]:
    """Facts gathered once by these runs and reused for 10 minutes (in the scenario's cache)."""
    cache = os.path.join(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "validation-facts")
    shutil.rmtree(cache, ignore_errors=True)  # gathered afresh by each test session
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANSIBLE_GATHERING", "smart")
        patch.setenv("ANSIBLE_CACHE_PLUGIN", "ansible.builtin.jsonfile")
        patch.setenv("ANSIBLE_CACHE_PLUGIN_CONNECTION", cache)
        patch.setenv("ANSIBLE_CACHE_PLUGIN_TIMEOUT", "600")
        yield


@pytest.mark.parametrize("bad_value, messages", CASES.values(), ids=CASES.keys())
def test_bad_value_fails_before_any_change(
    pytestconfig: pytest.Config,
    machine: Callable[[str], Host],
    bad_value: dict,
    messages: list[str],
) -> None:
    assert_rejected_before_any_change(
        pytestconfig,
        machine("lb1"),
        "lb1",
        bad_value,
        messages,
        timeout=120,
        before_task=FIRST_CHANGE,
    )
