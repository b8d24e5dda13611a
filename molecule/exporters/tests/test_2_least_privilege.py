"""Least privilege: the Redis exporter's ACL user reads statistics and nothing else, no secret
shows in a process list or a world-readable file, and only the monitoring machine reaches
the exporters."""

import shlex
from collections.abc import Callable

import pytest
from conftest import TIMED_OUT, tcp_connects, tcp_probe
from exporter_client import ADDRESSES, MONITOR, PORTS, REDIS, UNITS, fetch, variables
from testinfra.host import Host

SESSION_KEY = "webstack:session:exporters-test"


@pytest.fixture(scope="module")
def secrets(pytestconfig: pytest.Config) -> dict[str, str]:
    found = variables(pytestconfig, "redis1")
    keys = ("redis_password", "redis_exporter_password", "redis_sentinel_password")
    return {key: found[key] for key in keys}


def redis_as(host: Host, user: str, password: str, *command: str) -> str:
    """A command run by redis-cli on `host` as an ACL user; the password goes in the environment."""
    argv = ["redis-cli", "--no-auth-warning", "--user", user, *command]
    result = host.run(f"env REDISCLI_AUTH={shlex.quote(password)} {shlex.join(argv)}")
    return (result.stdout + result.stderr).strip()


@pytest.fixture(scope="module")
def primary(machine: Callable[[str], Host], secrets: dict[str, str]) -> Host:
    """The machine whose Redis is the primary, holding a session key for the tests."""
    admin = secrets["redis_password"]
    found = [
        name
        for name in REDIS
        if redis_as(machine(name), "default", admin, "ROLE").startswith("master")
    ]
    assert len(found) == 1, found
    host = machine(found[0])
    assert (
        redis_as(host, "default", admin, "SET", SESSION_KEY, "secret-session", "EX", "900") == "OK"
    )
    return host


def test_exporter_user_reads_statistics(primary: Host, secrets: dict[str, str]) -> None:
    password = secrets["redis_exporter_password"]
    assert "redis_version:" in redis_as(primary, "exporter", password, "INFO", "server")
    assert redis_as(primary, "exporter", password, "SLOWLOG", "LEN").isdigit()
    assert "WRONGPASS" in redis_as(primary, "exporter", "not-the-password-00", "INFO")


@pytest.mark.parametrize(
    "command",
    [
        ("GET", SESSION_KEY),
        ("SET", SESSION_KEY, "x"),
        ("SCAN", "0"),
        ("KEYS", "*"),
        ("FLUSHALL",),
        ("CONFIG", "GET", "masterauth"),
        ("SLOWLOG", "GET", "1"),
        ("CLIENT", "LIST"),
        ("ACL", "LIST"),
        ("MONITOR",),
        ("SHUTDOWN",),
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_exporter_user_is_refused_everything_else(
    primary: Host, secrets: dict[str, str], command: tuple[str, ...]
) -> None:
    answer = redis_as(primary, "exporter", secrets["redis_exporter_password"], *command)
    assert answer.startswith("NOPERM"), f"{' '.join(command)} answered: {answer}"
    assert (
        redis_as(primary, "default", secrets["redis_password"], "GET", SESSION_KEY)
        == "secret-session"
    )


def test_exporter_asks_for_nothing_but_slowlog_get_it_may_not_have(
    machine: Callable[[str], Host], secrets: dict[str, str]
) -> None:
    """What the exporter runs on each scrape passes the ACL, except SLOWLOG GET (left out on
    purpose: it returns command arguments, session keys among them)."""
    redis1, admin = machine("redis1"), secrets["redis_password"]
    assert redis_as(redis1, "default", admin, "ACL", "LOG", "RESET") == "OK"
    fetch(
        machine(MONITOR),
        f"http://{ADDRESSES['redis1']}:{PORTS['prometheus-redis-exporter']}/metrics",
    )
    log = redis_as(redis1, "default", admin, "ACL", "LOG").splitlines()
    denied = {log[i + 1] for i, field in enumerate(log) if field == "object"}
    users = {log[i + 1] for i, field in enumerate(log) if field == "username"}
    assert denied <= {"slowlog|get"}, log
    assert users <= {"exporter"}, log


@pytest.mark.parametrize("name", ["redis1", "lb1"])
def test_no_secret_in_process_lists_or_readable_files(
    machine: Callable[[str], Host], secrets: dict[str, str], name: str
) -> None:
    host = machine(name)
    processes = host.check_output("ps -eo args")
    for secret in secrets.values():
        assert secret not in processes
    for path in (
        "/etc/default/prometheus-redis-exporter",
        "/etc/default/webstack-sentinel-metrics",
    ):
        file = host.file(path)
        if name.startswith("redis"):
            assert (file.user, file.group, file.mode) == ("root", "root", 0o600), path
        else:
            assert not file.exists, f"{path} on {name}, which runs no Redis exporter"
    if name.startswith("redis"):
        # The exporter's environment (its password) is not readable by the other services' users.
        pid = host.check_output("systemctl show -p MainPID --value prometheus-redis-exporter")
        for user in ("prometheus-node-exporter", "webstack-metrics"):
            peek = host.run(f"runuser -u {user} -- cat /proc/{pid}/environ")
            assert peek.rc != 0 and secrets["redis_exporter_password"] not in peek.stdout, user


def test_only_the_monitoring_machine_reaches_the_exporters(machine: Callable[[str], Host]) -> None:
    monitor = machine(MONITOR)
    for name, units in UNITS.items():
        for unit in units:
            if unit in PORTS:
                assert tcp_connects(monitor, ADDRESSES[name], PORTS[unit]), f"{name} {unit}"
    node = PORTS["prometheus-node-exporter"]
    # A balancer and a Redis machine outside the monitoring group are dropped, on every port.
    assert tcp_probe(machine("lb1"), ADDRESSES["redis1"], node) == TIMED_OUT
    assert (
        tcp_probe(machine("lb1"), ADDRESSES["redis1"], PORTS["prometheus-redis-exporter"])
        == TIMED_OUT
    )
    assert (
        tcp_probe(machine("redis2"), ADDRESSES["redis1"], PORTS["prometheus-redis-exporter"])
        == TIMED_OUT
    )
    assert tcp_probe(machine("redis2"), ADDRESSES["lb1"], node) == TIMED_OUT
    assert (
        tcp_probe(machine("redis2"), ADDRESSES["lb1"], PORTS["prometheus-nginx-exporter"])
        == TIMED_OUT
    )
