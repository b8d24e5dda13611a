"""The whole topology, checked the way a user and an operator see it: requests from the
lab's client machine through the balancers' virtual IP, while machines and services die.

Every drill is bounded in time and restores what it broke, so the next one starts whole.
The figures (gaps, failed requests) are printed: run with -s (molecule.yml does)."""

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from conftest import CONNECTED, TIMED_OUT, tcp_probe, wait_until
from contract import contract, port
from playbooks import play_recap, run_playbook
from testinfra.host import Host

ROOT = Path(__file__).resolve().parents[3]
LAB = os.environ.get("LAB_NAME", "molecule-topology")
SUBNET = ipaddress.ip_network(os.environ.get("LAB_SUBNET", "10.79.0.0/24"))
VIP = str(SUBNET[100])
ADDRESS = {
    name: str(SUBNET[number])
    for name, number in {
        "lb1": 11,
        "lb2": 12,
        "app1": 21,
        "app2": 22,
        "redis1": 31,
        "redis2": 32,
        "redis3": 33,
        "client1": 91,
    }.items()
}
SECRETS = yaml.safe_load((ROOT / "inventories/lab/group_vars/all/vault.yml").read_text())
FIGURES: list[str] = []
# Seconds the looping client runs on after the VIP has moved (plus the Loop's 2 s tail);
# requests must have resumed within them, leaving at least RESUMED_SECONDS of successes.
RESUMED_SECONDS = 4

MachineGetter = Callable[[str], Host]


def figure(line: str) -> None:
    """Print a measured figure now and again at the end of the run."""
    print(f"\n[figure] {line}")
    FIGURES.append(line)


@pytest.fixture(scope="module", autouse=True)
def report_figures() -> Iterator[None]:
    yield
    print("\n=== failover figures ===\n" + "\n".join(FIGURES))


def docker(*args: str) -> None:
    subprocess.run(["docker", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def client(machine: MachineGetter) -> Host:
    host = machine("client1")
    files = Path(__file__).parent.parent / "files"
    for name in ("loop_client.py", "request.py"):
        copied = host.ansible(
            "ansible.builtin.copy",
            f"src={files / name} dest=/usr/local/bin/{name} mode=0755",
            check=False,
        )
        assert not copied.get("failed"), copied
    return host


def request(
    client: Host, method: str, path: str, cookie: str = "", body: dict | None = None
) -> dict:
    command = f"python3 /usr/local/bin/request.py {method} https://{VIP}{path}"
    if cookie:
        command += f" --cookie '{cookie}'"
    if body is not None:
        command += f" --json '{json.dumps(body)}'"
    result = client.run(command)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


class Loop:
    """A client looping GETs through the VIP in the background, on the client machine, for
    as long as the `with` block lasts (and at most 300 s); `.report` is what it saw."""

    def __init__(self, client: Host, path: str, cookie: str = "") -> None:
        self.client = client
        self.path = path
        self.cookie = cookie
        self.unit = f"loop-client-{time.time_ns()}"
        self.file = f"/var/tmp/{self.unit}.json"
        self.report: dict = {}

    def __enter__(self) -> "Loop":
        cookie_arg = f" --cookie '{self.cookie}'" if self.cookie else ""
        started = self.client.run(
            f"systemd-run --unit {self.unit} --collect python3 /usr/local/bin/loop_client.py "
            f"https://{VIP}{self.path} {self.file}{cookie_arg} --max-seconds 300"
        )
        assert started.rc == 0, started.stderr
        time.sleep(2)  # a baseline of successful requests before the drill
        return self

    def __exit__(self, *_exc: object) -> None:
        time.sleep(2)  # and a tail of them after
        self.client.run(f"systemctl stop {self.unit}")
        written = wait_until(lambda: self.client.file(self.file).exists, timeout=10)
        assert written is not None, "the looping client wrote no report"
        self.report = json.loads(self.client.file(self.file).content_string)


def answers(host: Host, command: str) -> str | None:
    """The command's output, or None when the machine does not answer (stopped, booting)."""
    try:
        result = host.run(command)
    except RuntimeError:
        return None
    return result.stdout if result.rc == 0 else None


def vip_holders(machine: MachineGetter) -> list[str]:
    holders = []
    for name in ("lb1", "lb2"):
        if running(name) and f"{VIP}/" in (answers(machine(name), "ip -br -4 addr show") or ""):
            holders.append(name)
    return holders


def running(name: str) -> bool:
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", f"{LAB}-{name}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return state.stdout.strip() == "true"


def restart_machine(machine: MachineGetter, name: str) -> None:
    """Start a stopped machine and wait until it answers SSH again."""
    docker("start", f"{LAB}-{name}")
    back = wait_until(
        lambda: answers(machine(name), "systemctl is-system-running --wait || true") is not None,
        timeout=90,
        step=2,
    )
    assert back is not None, f"{name} did not come back"


def only_one_holder(machine: MachineGetter, timeout: float = 60) -> str:
    assert wait_until(lambda: len(vip_holders(machine)) == 1, timeout=timeout) is not None, (
        f"VIP holders: {vip_holders(machine)}"
    )
    return vip_holders(machine)[0]


def test_the_vip_is_on_exactly_one_balancer(machine: MachineGetter) -> None:
    only_one_holder(machine)


def test_responses_come_from_both_app_machines(client: Host) -> None:
    served = {request(client, "GET", "/hello")["served_by"] for _ in range(20)}
    assert served == {"app1", "app2"}


def test_a_session_made_on_one_app_machine_is_read_on_the_other(client: Host) -> None:
    made = request(client, "POST", "/api/session/notes", body={"note": "written on one"})
    assert made["status"] in (200, 201), made
    cookie = made["set_cookie"].split(";")[0]
    other = None
    for _ in range(20):
        read = request(client, "GET", "/api/session", cookie=cookie)
        if read["served_by"] != made["served_by"]:
            other = read
            break
    assert other is not None, "every read came from the machine that wrote the session"
    assert "written on one" in other["body"], other


def vip_drill(
    machine: MachineGetter,
    client: Host,
    what: str,
    break_master: Callable[[str], object],
    restore_master: Callable[[str], object],
    settle: float = 60,
) -> None:
    """Breaks the VIP holder under a looping client, checks the VIP moves to the other
    balancer alone and requests resume there, restores the holder, and waits until one
    balancer holds the VIP again."""
    master = only_one_holder(machine, timeout=settle)
    other = next(name for name in ("lb1", "lb2") if name != master)
    try:
        with Loop(client, "/hello") as loop:
            break_master(master)
            moved = wait_until(lambda: vip_holders(machine) == [other], timeout=30)
            time.sleep(RESUMED_SECONDS)  # the client keeps going on the new holder
    finally:
        restore_master(master)
    report = loop.report
    assert moved is not None, f"the VIP did not move to {other} alone: {vip_holders(machine)}"
    figure(
        f"{what.format(master=master)}: VIP moved in {moved:.1f}s; longest gap "
        f"{report['longest_gap']}s, {report['failures']} of {report['requests']} requests failed"
    )
    # Requests resumed: every request of the last seconds, after the move, succeeded.
    assert report["ok_for_last"] >= RESUMED_SECONDS, report
    assert report["failures"] < report["requests"] / 2, report
    only_one_holder(machine, timeout=90)


def test_losing_a_balancer_moves_the_vip_and_requests_resume(
    machine: MachineGetter, client: Host
) -> None:
    vip_drill(
        machine,
        client,
        "balancer {master} stopped",
        break_master=lambda master: docker("stop", f"{LAB}-{master}"),
        restore_master=lambda master: restart_machine(machine, master),
    )


def test_losing_nginx_on_the_master_moves_the_vip(machine: MachineGetter, client: Host) -> None:
    vip_drill(
        machine,
        client,
        "nginx stopped on {master}",
        break_master=lambda master: machine(master).run("systemctl stop nginx"),
        restore_master=lambda master: machine(master).run("systemctl start nginx"),
        settle=90,
    )


def test_losing_an_app_machine_fails_no_get(machine: MachineGetter, client: Host) -> None:
    try:
        with Loop(client, "/hello") as loop:
            docker("stop", f"{LAB}-app1")
            time.sleep(5)
    finally:
        restart_machine(machine, "app1")
    report = loop.report
    figure(
        f"app1 stopped: {report['failures']} of {report['requests']} GETs failed, longest gap "
        f"{report['longest_gap']}s, served by {report['served_by']}"
    )
    assert report["failures"] == 0, report
    both = wait_until(
        lambda: (
            {request(client, "GET", "/hello")["served_by"] for _ in range(6)} == {"app1", "app2"}
        ),
        timeout=60,
        step=2,
    )
    assert both is not None, "app1 did not come back into the upstream"


def sentinel_primary(machine: MachineGetter) -> str | None:
    password = SECRETS["vault_redis_sentinel_password"]
    for name in ("redis1", "redis2", "redis3"):
        if not running(name):
            continue
        out = answers(
            machine(name),
            f"redis-cli -p {port('redis_sentinel_port')} --user default --pass {password} "
            "--no-auth-warning SENTINEL get-master-addr-by-name "
            f"{contract()['redis_sentinel_master_name']}",
        )
        if out and out.split():
            return out.split()[0]
    return None


def test_losing_the_redis_primary_keeps_the_sessions(machine: MachineGetter, client: Host) -> None:
    made = request(client, "POST", "/api/session/notes", body={"note": "before the failover"})
    cookie = made["set_cookie"].split(";")[0]
    old = sentinel_primary(machine)
    assert old is not None, "no Sentinel answered"
    old_name = next(name for name, address in ADDRESS.items() if address == old)
    try:
        with Loop(client, "/api/session", cookie=cookie) as loop:
            docker("stop", f"{LAB}-{old_name}")
            promoted = wait_until(
                lambda: sentinel_primary(machine) not in (None, old), timeout=60, step=1
            )
            back = wait_until(
                lambda: request(client, "GET", "/api/session", cookie=cookie)["status"] == 200,
                timeout=60,
                step=1,
            )
    finally:
        restart_machine(machine, old_name)
    report = loop.report
    assert promoted is not None, "Sentinel promoted no replica"
    assert back is not None, "the app did not follow the new primary"
    figure(
        f"redis primary {old_name} stopped: new primary after {promoted:.1f}s; "
        f"{report['failures']} of {report['requests']} session reads failed, "
        f"longest gap {report['longest_gap']}s"
    )
    session = request(client, "GET", "/api/session", cookie=cookie)
    assert "before the failover" in session["body"], session


APP_MACHINES = ("app1", "app2")


def current_releases(machine: MachineGetter) -> dict[str, str]:
    """App machine -> the release its `current` link points at."""
    return {
        name: machine(name).file("/opt/webstack-app/current").linked_to.rsplit("/", 1)[-1]
        for name in APP_MACHINES
    }


def drained_on(machine: MachineGetter, app: str) -> list[str]:
    """The balancers whose live upstream marks `app` drained (down)."""
    return [
        lb
        for lb in ("lb1", "lb2")
        if machine(lb).run(f"grep -q '# {app} (drained)' /etc/nginx/webstack/backends.conf").rc == 0
    ]


def rolling_update(pytestconfig: pytest.Config, **extra_vars: object) -> dict:
    """Runs rolling_update.yml with the scenario's inventory: its return code, its whole
    output (stdout and stderr), and the end of it for failure messages."""
    run = run_playbook(
        pytestconfig, "../../rolling_update.yml", "--extra-vars", json.dumps(extra_vars)
    )
    output = run.stdout + run.stderr
    return {"rc": run.returncode, "output": output, "tail": output[-4000:]}


def test_a_rolling_update_fails_no_request(
    pytestconfig: pytest.Config, machine: MachineGetter, client: Host
) -> None:
    before = current_releases(machine)
    with Loop(client, "/hello") as loop:
        update = rolling_update(pytestconfig, app_version="rolling-update-test")
    report = loop.report
    assert update["rc"] == 0, update["tail"]
    figure(
        f"rolling update: {report['failures']} of {report['requests']} requests failed, "
        f"longest gap {report['longest_gap']}s"
    )
    assert report["failures"] == 0, report
    after = current_releases(machine)
    assert after["app1"] == after["app2"] != before["app1"], (before, after)
    assert "rolling-update-test" in after["app1"], after
    assert {app: drained_on(machine, app) for app in APP_MACHINES} == {"app1": [], "app2": []}


def test_a_failed_machine_stops_the_rolling_update(
    pytestconfig: pytest.Config, machine: MachineGetter, client: Host
) -> None:
    """A release that never gets ready (here: a wrong Redis password) fails on the first
    machine; the rollout stops there, that machine stays drained, the others keep their
    release, and no request fails. A good rollout afterwards puts everything back."""
    before = current_releases(machine)
    try:
        with Loop(client, "/hello") as loop:
            update = rolling_update(
                pytestconfig,
                app_version="rolling-update-broken",
                app_redis_password="not-the-sessions-password",
                app_ready_timeout=10,
            )
        assert update["rc"] != 0, update["tail"]
        # It failed at the app role's readiness check, on app1 only.
        assert "TASK [app : Fail with the journal]" in update["output"], update["tail"]
        assert play_recap(update["output"])["app1"]["failed"] == 1, update["tail"]
        after = current_releases(machine)
        assert "rolling-update-broken" in after["app1"], after
        assert after["app2"] == before["app2"], "the rollout went on past the failed machine"
        assert drained_on(machine, "app1") == ["lb1", "lb2"]
        assert drained_on(machine, "app2") == []
        report = loop.report
        figure(
            f"rolling update stopped at app1: {report['failures']} of {report['requests']} "
            f"requests failed, served by {report['served_by']}"
        )
        assert report["failures"] == 0, report
    finally:
        restored = rolling_update(pytestconfig, app_version="rolling-update-test")
    assert restored["rc"] == 0, restored["tail"]
    assert current_releases(machine) == before
    assert drained_on(machine, "app1") == []


FIREWALLED_PORTS = [
    ("lb1", "app1", "app_port"),
    ("app1", "redis1", "redis_port"),
    ("app1", "redis1", "redis_sentinel_port"),
]


@pytest.mark.parametrize(("allowed", "target", "name"), FIREWALLED_PORTS)
def test_the_client_cannot_reach_app_or_redis_ports(
    machine: MachineGetter, client: Host, allowed: str, target: str, name: str
) -> None:
    """Dropped for the client, while the tier that needs the port connects: the service is
    up, so the time-out is the firewall's doing. Ports as the contract sets them."""
    assert tcp_probe(machine(allowed), ADDRESS[target], port(name)) == CONNECTED
    assert tcp_probe(client, ADDRESS[target], port(name)) == TIMED_OUT
