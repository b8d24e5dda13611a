"""Breaking things: an app stops on its machine, one is drained, a bad configuration or a bad
value is pushed. (Losing a whole machine is a system drill: molecule/topology.)

Each test is bounded in time and puts back what it broke.
"""

import time
from collections import Counter
from collections.abc import Callable

import pytest
import testinfra
from nginx_client import APPS, Loop, get, wait_until_both_apps_serve
from playbooks import assert_rejected_before_any_change, run_playbook

testinfra_hosts = ["lb1"]

# The systemd units that make the app answer on an app machine (roles/app): the socket too,
# or systemd would start the service again on the next connection.
APP_UNITS = "webstack-app.socket webstack-app.service"
LIVE_FILES = "/etc/nginx/nginx.conf /etc/nginx/webstack/*.conf"


def run_while(loop: Loop, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and loop.is_alive():
        time.sleep(0.2)


def test_stopping_the_app_on_a_machine_fails_no_get(
    machine: Callable[[str], testinfra.host.Host],
) -> None:
    assert wait_until_both_apps_serve() >= set(APPS)
    app2 = machine("app2")
    loop = Loop(interval=0.1)
    loop.start()
    try:
        run_while(loop, 2)
        stop = app2.run(f"systemctl stop {APP_UNITS}")
        assert stop.rc == 0, stop.stderr
        run_while(loop, 8)
    finally:
        loop.stop()
        app2.run(f"systemctl start {APP_UNITS}")
    served = Counter(o[1] for o in loop.outcomes)
    print(f"\n{len(loop.outcomes)} GETs while app2's app stopped: {dict(served)}")
    assert len(loop.outcomes) >= 30
    assert not loop.failures, loop.failures
    assert loop.outcomes[-1][1] == "app1"
    assert wait_until_both_apps_serve() >= set(APPS)


def nginx_processes(host: testinfra.host.Host) -> tuple[str, set[str]]:
    """The master's PID and the PIDs of its workers."""
    master = host.file("/run/nginx.pid").content_string.strip()
    pgrep = f"pgrep -P {master} -u www-data -f '^nginx: worker process$'"
    workers = set(host.run(pgrep).stdout.split())
    return master, workers


def test_a_drained_machine_gets_no_requests_and_comes_back(
    pytestconfig: pytest.Config, host: testinfra.host.Host
) -> None:
    master, workers = nginx_processes(host)
    assert workers, "no nginx worker"
    drain = run_playbook(pytestconfig, "drain.yml", "-e", "drain_host=app2", "-e", "drained=true")
    assert drain.returncode == 0, drain.stdout[-3000:]
    try:
        served_by = {get().served_by for _ in range(12)}
        assert served_by == {"app1"}
        # The new upstream went live by a reload: the same master, a new set of workers.
        reloaded_master, new_workers = nginx_processes(host)
        assert reloaded_master == master, "nginx was restarted, not reloaded"
        assert new_workers and not new_workers & workers, "the workers were not replaced"
    finally:
        back = run_playbook(
            pytestconfig, "drain.yml", "-e", "drain_host=app2", "-e", "drained=false"
        )
    assert back.returncode == 0, back.stdout[-3000:]
    assert wait_until_both_apps_serve(timeout=30) >= set(APPS)


def test_a_bad_configuration_is_refused_and_the_old_one_keeps_serving(
    pytestconfig: pytest.Config, host: testinfra.host.Host
) -> None:
    before = host.run(f"sha256sum {LIVE_FILES}").stdout
    master = host.file("/run/nginx.pid").content_string.strip()
    # A typo in a value: renders fine, but nginx -t refuses it.
    bad = run_playbook(
        pytestconfig, "converge.yml", "--limit", "lb", "-e", "nginx_client_max_body_size=10xb"
    )
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "nginx -t rejects the new configuration" in output, output[-3000:]
    assert '"client_max_body_size" directive invalid value' in output
    assert host.run(f"sha256sum {LIVE_FILES}").stdout == before, "the live configuration changed"
    # The staging tree is rolled back to the live files, so a later drain is not blocked.
    assert host.run("diff -r /etc/nginx/ansible-staging/webstack /etc/nginx/webstack").rc == 0
    assert host.run("cmp /etc/nginx/ansible-staging/nginx.conf /etc/nginx/nginx.conf").rc == 0
    assert host.file("/run/nginx.pid").content_string.strip() == master
    assert host.service("nginx").is_running
    assert get().status == 200
    # The role with good values goes through again.
    good = run_playbook(pytestconfig, "converge.yml", "--limit", "lb")
    assert good.returncode == 0, good.stdout[-3000:]
    assert host.run(f"sha256sum {LIVE_FILES}").stdout == before


@pytest.mark.parametrize(
    ("bad_value", "message"),
    [
        (
            {"nginx_backend_group": "nosuchgroup"},
            "Inventory group 'nosuchgroup' (nginx_backend_group)",
        ),
        ({"nginx_upstream_balance": "fastest"}, "nginx_upstream_balance must be one of"),
        (
            {"nginx_proxy_next_upstream": ["error", "non_idempotent"]},
            "Got no match for: non_idempotent",
        ),
    ],
    ids=["empty-app-group", "unknown-balance-method", "retry-non-idempotent"],
)
def test_bad_variables_are_refused_before_any_change(
    pytestconfig: pytest.Config,
    machine: Callable[[str], testinfra.host.Host],
    bad_value: dict,
    message: str,
) -> None:
    assert_rejected_before_any_change(pytestconfig, machine("lb1"), "lb1", bad_value, [message])
