"""The three machines together, the way an operator checks a session store.

The tests run in this order: replication and authentication first, then a crash of the
primary (AOF), then runtime settings changed by a converge without a restart, then the failover
drill and a converge after it. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra
import yaml
from conftest import wait_for
from playbooks import play_recap, run_playbook
from redis_cluster import KEY_PREFIX, MASTER_NAME, Cluster, Machine

PROMOTION_TIMEOUT = 60  # seconds the drill waits at most for the Sentinels to promote a replica
REJOIN_TIMEOUT = 60  # seconds for the old primary to come back as a replica
WRITE_TIMEOUT = 30  # seconds for a new primary to take writes (it needs one replica in sync)


@pytest.fixture(scope="module")
def cluster(pytestconfig: pytest.Config) -> Cluster:
    """The three machines of group redis, with the secrets the converge gave them."""
    inventory = pytestconfig.getoption("ansible_inventory")
    hosts = testinfra.get_hosts(["ansible://redis"], ansible_inventory=inventory)
    machines = {}
    for host in hosts:
        variables = host.ansible.get_variables()
        name = variables["inventory_hostname"]
        secrets = {
            key: variables[key]
            for key in ("redis_password", "redis_app_password", "redis_sentinel_password")
        }
        secrets["redis_app_user"] = variables.get("redis_app_user", "webstack")
        machines[name] = Machine(name, variables["ansible_host"], host, secrets)
    assert len(machines) == 3, f"expected the three machines of group redis, got {sorted(machines)}"
    return Cluster(machines)


def _in_sync(replica: Machine, primary: Machine) -> bool:
    info = replica.redis("INFO", "replication")
    return f"master_host:{primary.address}" in info and "master_link_status:up" in info


def test_one_primary_and_its_replicas_in_sync(cluster: Cluster) -> None:
    primary = cluster.primary()
    assert primary.role()[0] == "master"
    for replica in cluster.replicas():
        assert replica.role()[0] == "slave", replica.name
        wait_for(f"{replica.name} is in sync", lambda r=replica: _in_sync(r, primary), 30)
    for machine in cluster.machines.values():
        answer = machine.sentinel("SENTINEL", "CKQUORUM", MASTER_NAME)
        assert answer.startswith("OK 3 usable Sentinels"), (machine.name, answer)


def test_authentication_is_required(cluster: Cluster) -> None:
    primary = cluster.primary()
    other = cluster.replicas()[0]
    # From another machine, over the private network, as a client would come.
    assert other.redis("PING", user="none", at=primary.address).startswith("NOAUTH")
    assert other.redis("GET", f"{KEY_PREFIX}x", user="none", at=primary.address).startswith(
        "NOAUTH"
    )
    wrong = other.cli(6379, "not-the-password-at-all", ("PING",), primary.address)
    assert "WRONGPASS" in wrong
    assert other.sentinel("SENTINEL", "MASTERS", password="", at=primary.address).startswith(
        "NOAUTH"
    )
    assert other.sentinel("PING", at=primary.address) == "PONG"


def test_app_user_keeps_sessions_and_nothing_more(cluster: Cluster) -> None:
    primary = cluster.primary()
    key = f"{KEY_PREFIX}session:acl-test"
    assert primary.redis("SET", key, '{"visits": 1}', "EX", "600", user="app") == "OK"
    assert primary.redis("GETEX", key, "EX", "900", user="app") == '{"visits": 1}'
    assert primary.redis("PING", user="app") == "PONG"
    refused = {
        "CONFIG GET": ("CONFIG", "GET", "maxmemory"),
        "CONFIG SET": ("CONFIG", "SET", "maxmemory", "1mb"),
        "FLUSHALL": ("FLUSHALL",),
        "FLUSHDB": ("FLUSHDB",),
        "KEYS": ("KEYS", "*"),
        "SHUTDOWN": ("SHUTDOWN",),
        "a key outside the namespace": ("SET", "elsewhere", "1"),
    }
    for what, command in refused.items():
        assert primary.redis(*command, user="app").startswith("NOPERM"), what
    assert primary.redis("GET", key, user="app") == '{"visits": 1}'


def test_key_written_on_the_primary_is_read_on_every_replica(cluster: Cluster) -> None:
    primary = cluster.primary()
    key = f"{KEY_PREFIX}session:replicated"
    assert primary.redis("SET", key, "from-the-primary", user="app") == "OK"
    for replica in cluster.replicas():
        wait_for(
            f"{replica.name} has the key",
            lambda r=replica: r.redis("GET", key, user="app") == "from-the-primary",
            10,
        )
        assert replica.redis("SET", key, "on-a-replica", user="app").startswith("READONLY")


def _run_id(machine: Machine) -> str:
    """The id of the running redis-server process: a new one at every start."""
    info = machine.redis("INFO", "server").splitlines()
    return next(line.split(":", 1)[1] for line in info if line.startswith("run_id:"))


def test_data_survives_a_crash_of_the_primary(cluster: Cluster) -> None:
    primary = cluster.primary()
    key = f"{KEY_PREFIX}session:persistent"
    assert primary.redis("SET", key, "kept-on-disk", user="app") == "OK"
    assert "aof_enabled:1" in primary.redis("INFO", "persistence")
    run_id = _run_id(primary)
    # appendfsync everysec: the write reaches the append-only file within a second or so.
    time.sleep(1.5)

    # A crash, not a clean stop: no shutdown save. systemd starts it again (Restart=on-failure)
    # after RestartSec=200ms, well under the Sentinels' down-after time (2 s), so no failover.
    primary.host.check_output("systemctl kill -s SIGKILL redis-server")
    wait_for(
        "systemd starts Redis again after the crash",
        lambda: primary.redis("PING") == "PONG" and _run_id(primary) != run_id,
        30,
    )

    # Still the primary, so the key came from its own append-only file, not from a replica.
    assert cluster.primary().name == primary.name
    assert primary.role()[0] == "master", primary.journal("redis-server")
    assert primary.redis("GET", key, user="app") == "kept-on-disk"
    for replica in cluster.replicas():
        wait_for(f"{replica.name} is in sync again", lambda r=replica: _in_sync(r, primary), 30)


# Runtime settings the role must change live (CONFIG SET), and their values for the test. The
# inventory leaves them at the role's defaults: 256mb and 300 s.
RUNTIME_CHANGE = {"redis_maxmemory": "320mb", "redis_timeout": 240}
RUNTIME_LIVE = {"maxmemory": str(320 * 1024 * 1024), "timeout": "240"}
RUNTIME_DEFAULT = {"maxmemory": str(256 * 1024 * 1024), "timeout": "300"}


def _converge(pytestconfig: pytest.Config, cluster: Cluster, *extra: str) -> dict[str, int]:
    """Converges every machine; returns machine name -> tasks changed."""
    played = run_playbook(pytestconfig, "converge.yml", *extra)
    output = played.stdout + played.stderr
    assert played.returncode == 0, output[-4000:]
    recap = play_recap(played.stdout)
    assert set(recap) == set(cluster.machines), output[-4000:]
    return {name: counters["changed"] for name, counters in recap.items()}


def _live(machine: Machine, names: dict[str, str]) -> dict[str, str]:
    lines = machine.redis("CONFIG", "GET", *names).splitlines()
    return dict(zip(lines[::2], lines[1::2], strict=True))


def _persisted(machine: Machine) -> dict[str, str]:
    """maxmemory and timeout as Redis's own file holds them (what a restart would read)."""
    units = {"": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
    found = {}
    for line in machine.host.file("/var/lib/redis/redis.conf").content_string.splitlines():
        name, _, value = line.partition(" ")
        if name == "timeout":
            found[name] = value
        elif name == "maxmemory":
            number = value.rstrip("kmgb")
            found[name] = str(int(number) * units[value[len(number) :].lower()])
    return found


def test_runtime_settings_change_without_a_restart(
    pytestconfig: pytest.Config, cluster: Cluster
) -> None:
    machines = cluster.machines.values()
    run_ids = {m.name: _run_id(m) for m in machines}
    assert all(_live(m, RUNTIME_DEFAULT) == RUNTIME_DEFAULT for m in machines)

    changed = _converge(pytestconfig, cluster, "--extra-vars", json.dumps(RUNTIME_CHANGE))
    assert all(changed.values()), f"a machine took none of the new settings: {changed}"
    for machine in machines:
        assert _run_id(machine) == run_ids[machine.name], f"{machine.name} restarted"
        assert _live(machine, RUNTIME_LIVE) == RUNTIME_LIVE, machine.name
        assert _persisted(machine) == RUNTIME_LIVE, f"{machine.name}: not in Redis's own file"

    # Back to the inventory's values, again live; then a converge at those values changes nothing.
    _converge(pytestconfig, cluster)
    for machine in machines:
        assert _run_id(machine) == run_ids[machine.name], f"{machine.name} restarted"
        assert _live(machine, RUNTIME_DEFAULT) == RUNTIME_DEFAULT, machine.name
        assert _persisted(machine) == RUNTIME_DEFAULT, f"{machine.name}: not in Redis's own file"
    assert _converge(pytestconfig, cluster) == dict.fromkeys(cluster.machines, 0)


def test_no_secret_is_on_a_remote_command_line(
    pytestconfig: pytest.Config, cluster: Cluster
) -> None:
    """Every command Ansible runs on a machine shows in its `ps` and in -vvv output (the SSH
    EXEC lines, a task's `environment` included): the role's redis-cli calls take the passwords on
    standard input instead."""
    played = run_playbook(pytestconfig, "converge.yml", "-vvv")
    assert played.returncode == 0, (played.stdout + played.stderr)[-4000:]
    # "<10.78.2.11> SSH: EXEC ssh ... '/bin/sh -c '"'"'... python3 ...'"'"''", one a task;
    # on stderr under molecule (ANSIBLE_VERBOSE_TO_STDERR), on stdout otherwise.
    output = (played.stdout + "\n" + played.stderr).splitlines()
    commands = [line for line in output if re.match(r"<[^>]+> (SSH: )?EXEC ", line)]
    assert len(commands) > 50, "no remote command lines in the -vvv output"
    secrets = next(iter(cluster.machines.values())).secrets
    for name in ("redis_password", "redis_sentinel_password"):
        leaked = [line[:300] for line in commands if secrets[name] in line]
        assert not leaked, f"{name} on a remote command line:\n" + "\n".join(leaked[:3])


@dataclass
class Drill:
    """What the failover drill did and measured."""

    old: Machine
    new: Machine
    keys: dict[str, str]
    promoted_after: float
    writable_after: float
    rejoined_after: float


@pytest.fixture(scope="module")
def drill(pytestconfig: pytest.Config, cluster: Cluster) -> Drill:
    """Stops the primary's Redis, waits for a promotion, starts the old primary again."""
    old = cluster.primary()
    for replica in cluster.replicas():
        wait_for(f"{replica.name} is in sync", lambda r=replica: _in_sync(r, old), 30)
    keys = {f"{KEY_PREFIX}session:before-failover-{n}": f"value-{n}" for n in range(20)}
    for key, value in keys.items():
        wait_for(
            f"{old.name} takes writes",
            lambda k=key, v=value: old.redis("SET", k, v, user="app") == "OK",
            WRITE_TIMEOUT,
        )
    # Both replicas hold every key before the crash (replication is asynchronous).
    assert old.redis("WAIT", "2", "5000", user="app") == "2"

    old.host.check_output("systemctl stop redis-server")
    stopped = time.monotonic()

    def promoted() -> Machine | None:
        views = set(cluster.sentinel_views().values())
        if len(views) == 1 and (address := views.pop()) != old.address:
            candidate = cluster.by_address(address)
            if candidate.role()[0] == "master":
                return candidate
        return None

    new = wait_for("the Sentinels promote a replica", promoted, PROMOTION_TIMEOUT)
    promoted_after = time.monotonic() - stopped

    key = f"{KEY_PREFIX}session:after-failover"
    wait_for(
        f"{new.name} takes writes",
        lambda: new.redis("SET", key, "written-on-the-new-primary", user="app") == "OK",
        WRITE_TIMEOUT,
    )
    writable_after = time.monotonic() - stopped
    keys[key] = "written-on-the-new-primary"

    old.host.check_output("systemctl start redis-server")
    started = time.monotonic()
    wait_for(
        f"{old.name} comes back as a replica of {new.name}",
        lambda: _in_sync(old, new) and old.redis("GET", key) == keys[key],
        REJOIN_TIMEOUT,
    )
    rejoined_after = time.monotonic() - started
    # Shown in the test run's output whatever the capture settings: the numbers are results.
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(
            f"\nfailover drill: {old.name} stopped; {new.name} promoted after "
            f"{promoted_after:.1f} s and taking writes after {writable_after:.1f} s; {old.name} "
            f"back as its replica {rejoined_after:.1f} s after its restart"
        )
    return Drill(old, new, keys, promoted_after, writable_after, rejoined_after)


def _down_after_ms(cluster: Cluster) -> int:
    """redis_sentinel_down_after_ms: the inventory's value, else the role's default."""
    variables = next(iter(cluster.machines.values())).host.ansible.get_variables()
    if "redis_sentinel_down_after_ms" in variables:
        return int(variables["redis_sentinel_down_after_ms"])
    defaults = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"], "roles/redis/defaults/main.yml")
    return int(yaml.safe_load(defaults.read_text())["redis_sentinel_down_after_ms"])


def test_failover_promotes_a_replica_in_bounded_time(
    pytestconfig: pytest.Config, cluster: Cluster, drill: Drill
) -> None:
    down_after_ms = _down_after_ms(cluster)
    # The Sentinels run with that value (the bound below is about them).
    for machine in cluster.machines.values():
        lines = machine.sentinel("SENTINEL", "MASTER", MASTER_NAME).splitlines()
        held = dict(zip(lines[::2], lines[1::2], strict=False))
        assert held.get("down-after-milliseconds") == str(down_after_ms), (machine.name, held)
    # The primary is deemed down after down-after; the vote, the promotion and the Sentinels
    # agreeing on it take a few seconds more.
    bound = down_after_ms / 1000 + 10
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\npromotion after {drill.promoted_after:.1f} s (bound {bound:.0f} s)")
    assert drill.new.name != drill.old.name
    assert drill.promoted_after < bound, (
        f"promotion took {drill.promoted_after:.1f} s, more than down-after-milliseconds "
        f"({down_after_ms} ms) + 10 s"
    )


def test_new_primary_has_every_key_written_before(drill: Drill) -> None:
    for key, value in drill.keys.items():
        assert drill.new.redis("GET", key, user="app") == value, key


def test_old_primary_is_now_a_replica_of_the_new_one(cluster: Cluster, drill: Drill) -> None:
    assert cluster.primary().name == drill.new.name
    role = drill.old.role()
    assert role[:3] == ["slave", drill.new.address, "6379"], role


def test_redis_recorded_the_new_roles_in_its_own_config(drill: Drill) -> None:
    # Sentinel had each Redis rewrite its config file (CONFIG REWRITE), so a restart keeps the
    # new roles: the hardened unit lets Redis write that file, in its data directory.
    new_config = drill.new.host.file("/var/lib/redis/redis.conf").content_string
    old_config = drill.old.host.file("/var/lib/redis/redis.conf").content_string
    assert "\nreplicaof " not in new_config
    assert f"\nreplicaof {drill.new.address} 6379\n" in old_config


def test_converge_after_the_failover_changes_nothing(
    pytestconfig: pytest.Config, cluster: Cluster, drill: Drill
) -> None:
    played = run_playbook(pytestconfig)
    output = played.stdout + played.stderr
    assert played.returncode == 0, output[-4000:]
    recap = play_recap(played.stdout)
    assert set(recap) == set(cluster.machines), output[-4000:]
    changed = {name: counters["changed"] for name, counters in recap.items()}
    assert changed == dict.fromkeys(cluster.machines, 0), output[-4000:]
    # The converge left the promotion alone.
    assert cluster.primary().name == drill.new.name
    assert drill.old.role()[:2] == ["slave", drill.new.address]
