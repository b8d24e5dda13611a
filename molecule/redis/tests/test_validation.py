"""A bad value stops the role before it changes anything, with a message that says what to fix."""

from collections.abc import Callable

import pytest
from playbooks import assert_rejected_before_any_change
from testinfra.host import Host

CASES = {
    "no password": ({"redis_app_password": None}, "redis_app_password is missing or too weak"),
    "a short password": ({"redis_password": "short"}, "redis_password is missing or too weak"),
    "an unknown eviction policy": (
        {"redis_maxmemory_policy": "evict-everything"},
        "value of redis_maxmemory_policy must be one of",
    ),
    "a primary outside the group": (
        {"redis_primary": "app1"},
        "redis_primary is 'app1', which is not a machine of group 'redis'",
    ),
    "a quorum above the number of Sentinels": (
        {"redis_sentinel_quorum": 4},
        "redis_sentinel_quorum (4) between 2 and the number of Sentinels (3)",
    ),
    # Only Redis can judge ACL rules: a scratch redis-server loads the file before it goes live
    # (a file that does not load would make every Redis abort at its next start).
    "a typo in the app's ACL rules": (
        {"redis_app_acl_rules": "-@all +@connection +gett"},
        "Error in applying operation '+gett': Unknown command or category name in ACL",
    ),
    "a typo in an extra ACL user's rules": (
        {
            "redis_acl_users": [
                {"name": "backup", "password": "a" * 24, "rules": "~* +@read +scann"}
            ]
        },
        "Error in applying operation '+scann'",
    ),
}


@pytest.mark.parametrize("bad_value, message", CASES.values(), ids=CASES.keys())
def test_bad_value_fails_before_any_change(
    pytestconfig: pytest.Config, machine: Callable[[str], Host], bad_value: dict, message: str
) -> None:
    assert_rejected_before_any_change(
        pytestconfig, machine("redis1"), "redis1", bad_value, [message]
    )
    # Whatever was refused, Redis still serves with the users it had.
    assert machine("redis1").service("redis-server").is_running
