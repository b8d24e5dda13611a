"""A bad value stops the role before it changes anything, with a message that says what to fix."""

from collections.abc import Callable

import pytest
from playbooks import assert_rejected_before_any_change
from testinfra.host import Host

CASES = {
    "a short secret key": (
        {"app_secret_key": "too-short"},
        "app_secret_key must have 32 characters or more (it has 9)",
    ),
    "a key prefix with a space": (
        {"app_redis_key_prefix": "shop sessions"},
        "app_redis_key_prefix (shop sessions) must be 1 to 64 characters",
    ),
    "the example vault's secret key": (
        {"app_secret_key": "CHANGE-ME-at-least-32-random-characters"},
        "not be the example vault's CHANGE-ME placeholder",
    ),
    # Each names the live release by another path: the cleanup would delete it.
    "a rollback to a release name with a trailing slash": (
        {"app_rollback_to": "1.0.0/"},
        "app_rollback_to (1.0.0/) must be a release name as in releases/",
    ),
    "a rollback to a release name with a leading ./": (
        {"app_rollback_to": "./1.0.0"},
        "app_rollback_to (./1.0.0) must be a release name as in releases/",
    ),
    "a release name that climbs out of releases/": (
        {"app_version": "../1.0.0"},
        "app_version (../1.0.0) must be a release name as in releases/",
    ),
    "a wildcard listening address": (
        {"app_bind_address": "0.0.0.0"},
        "app_bind_address (0.0.0.0) must be this machine's private IP address",
    ),
}


@pytest.mark.parametrize("bad_value, message", CASES.values(), ids=CASES.keys())
def test_bad_value_fails_before_any_change(
    pytestconfig: pytest.Config, machine: Callable[[str], Host], bad_value: dict, message: str
) -> None:
    assert_rejected_before_any_change(pytestconfig, machine("app1"), "app1", bad_value, [message])
