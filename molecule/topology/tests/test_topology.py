"""The whole topology, checked the way a user and an operator see it: requests from the
lab's client machine through the balancers' virtual IP, while machines and services die.

Every drill runs the shared traffic loop (molecule/traffic.py: paced GETs over new and
kept-alive connections, POSTs to a session, a user's timeout), breaks one part, asserts its
own bounds on failed requests and on the longest time without a successful answer, and
restores what it broke, so the next one starts whole. Machines are killed (docker kill, a
crash: no shutdown, no goodbye advert) and stopped cleanly. POSTs are counted on the server
too: the notes of the drill's session must equal the POSTs that got a success answer, give or
take those whose answer was lost, so none was applied twice and none acknowledged was lost.
The figures are printed (molecule.yml runs pytest with -s) and again at the end of the run:
docs/failover.md is made from them."""

import json
import math
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import answers, wait_until
from contract import REDIS_MACHINES, SECRETS, address, port, sentinel_primary, vip
from playbooks import play_recap, run_playbook
from testinfra.host import Host
from traffic import Traffic

ROOT = Path(__file__).resolve().parents[3]
LAB = os.environ.get("LAB_NAME", "molecule-topology")
VIP = vip()
BASE = f"https://{VIP}"
MONITOR = address("monitor1")
BALANCERS = ("lb1", "lb2")
FIGURES: list[str] = []
# The drills' traffic: 4 GET threads (2 on kept-alive connections) every 0.1 s and a POST
# every 0.5 s, well under nginx's per-address rate limit (50 r/s, burst 100).
TRAFFIC = {"threads": 4, "keepalive": 2, "interval": 0.1, "post_interval": 0.5}
# Seconds the traffic runs on after the VIP has moved; requests must have resumed within
# them (and the Traffic's 2 s tail).
RESUMED_SECONDS = 4
# Targets of issue #16, each asserted by its drill.
# Longest time without a success when the VIP holder or its nginx stops cleanly: the VIP
# moves in about 0.1 s, but a SYN the client sends in the moment it changes hands (the old
# holder has dropped the address, the client has not yet taken the new holder's gratuitous
# ARP) is lost, and the client's kernel sends it again only 1 s later: 0.3-0.6 s measured in
# most runs, 1.12 s in one (2026-12-03). One such retransmission is allowed.
VIP_GAP = 1.5
# ... and when it is killed: the 1 s is not reachable with the parts. A connection
# the client opens while the VIP is nowhere (or refused on a dead nginx) waits for the
# kernel's SYN retransmission, 1 s after the first SYN, on top of the failover itself (3
# missed 0.2 s adverts plus skew, 0.3-0.7 s measured): 1.2-1.5 s measured on this host.
VIP_CRASH_GAP = 2.0
REDIS_GAP = 5.0  # longest time without a session answer when the Redis primary crashes
# The user's patience, seconds: the VIP and Redis drills, and the app machine drill.
USER_TIMEOUT = 3.0
APP_USER_TIMEOUT = 5.0

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
    request_py = Path(__file__).parent.parent / "files" / "request.py"
    copied = host.ansible(
        "ansible.builtin.copy",
        f"src={request_py} dest=/usr/local/bin/request.py mode=0755",
        check=False,
    )
    assert not copied.get("failed"), copied
    return host


def request(
    client: Host, method: str, path: str, cookie: str = "", body: dict | None = None
) -> dict:
    command = f"python3 /usr/local/bin/request.py {method} {BASE}{path}"
    if cookie:
        command += f" --cookie '{cookie}'"
    if body is not None:
        command += f" --json '{json.dumps(body)}'"
    result = client.run(command)
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def new_session(client: Host, note: str) -> str:
    """The cookie of a new session holding one note."""
    made = request(client, "POST", "/api/session/notes", body={"note": note})
    assert made["status"] == 201, made
    return made["set_cookie"].split(";")[0]


def notes(client: Host, cookie: str) -> list[str]:
    read = request(client, "GET", "/api/session", cookie=cookie)
    assert read["status"] == 200, read
    return json.loads(read["body"])["notes"]


def traffic(client: Host, cookie: str, **options: object) -> Traffic:
    """The drills' traffic: GETs of `get` (default /hello), POSTs of a note to the session."""
    return Traffic(
        client,
        BASE,
        post="/api/session/notes",
        cookie=cookie,
        **{**TRAFFIC, "timeout": USER_TIMEOUT, **options},
    )


def posts_applied_once(client: Host, cookie: str, report: dict) -> str:
    """Asserts the drill's POSTs were applied exactly once each: the session holds one note
    per POST answered 2xx, plus at most those whose answer was lost or was a 5xx (the app may
    have stored the note before the answer failed). Returns the figure."""
    applied = len([note for note in notes(client, cookie) if note.startswith("drill ")])
    ambiguous = report["posts_unknown"] + report["posts_failed_5xx"]
    assert report["posts_ok"] <= applied <= report["posts_ok"] + ambiguous, (applied, report)
    return (
        f"POSTs {report['posts']}: {report['posts_ok']} acknowledged, {applied} applied "
        f"({ambiguous} without a clear answer)"
    )


def describe(report: dict) -> str:
    """The figures of a Traffic report, one line."""
    return (
        f"{report['failures']} of {report['requests']} requests failed "
        f"({report['get_failures']} of {report['gets']} GETs, "
        f"{report['post_failures']} of {report['posts']} POSTs), longest gap "
        f"{report['longest_gap']}s, errors {report['errors']}, statuses {report['statuses']}, "
        f"{report['reconnects']} kept-alive GETs sent again"
    )


def failure_bound(report: dict, gap: float) -> int:
    """Failed requests a gap of `gap` seconds allows: the requests sent in it, plus one in
    flight per thread."""
    rate = report["requests"] / max(report["seconds"], 1.0)
    return math.ceil(rate * gap) + TRAFFIC["threads"] + 1


def vip_holders(machine: MachineGetter) -> list[str]:
    holders = []
    for name in BALANCERS:
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
    """Start a stopped or killed machine and wait until it answers SSH again."""
    if not running(name):
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
    gap: float = VIP_GAP,
) -> None:
    """Breaks the VIP holder under the drills' traffic, checks the VIP moves to the other
    balancer alone and requests resume there within VIP_GAP, restores the holder, and waits
    until one balancer holds the VIP again."""
    master = only_one_holder(machine, timeout=settle)
    other = next(name for name in BALANCERS if name != master)
    cookie = new_session(client, "vip drill")
    try:
        with traffic(client, cookie) as loop:
            break_master(master)
            moved = wait_until(lambda: vip_holders(machine) == [other], timeout=30)
            time.sleep(RESUMED_SECONDS)  # the client keeps going on the new holder
    finally:
        restore_master(master)
    report = loop.report
    assert moved is not None, f"the VIP did not move to {other} alone: {vip_holders(machine)}"
    posts = posts_applied_once(client, cookie, report)
    figure(f"{what.format(master=master)}: VIP moved in {moved:.1f}s; {describe(report)}; {posts}")
    # Requests resumed: every request of the last seconds, after the move, succeeded.
    assert report["ok_for_last"] >= RESUMED_SECONDS, report
    assert report["longest_gap"] <= gap, report
    assert report["failures"] <= failure_bound(report, gap), report
    # The next drill starts whole: the restored balancer's keepalived runs again (as the
    # backup: keepalived does not preempt by default) and one balancer holds the VIP.
    rejoined = wait_until(
        lambda: answers(machine(master), "systemctl is-active keepalived nginx") is not None,
        timeout=60,
        step=1,
    )
    assert rejoined is not None, f"keepalived or nginx did not come back on {master}"
    time.sleep(2)
    only_one_holder(machine, timeout=30)


@pytest.mark.parametrize(
    ("how", "command"), [("killed", "kill"), ("stopped", "stop")], ids=["kill", "stop"]
)
def test_losing_a_balancer_moves_the_vip_and_requests_resume(
    machine: MachineGetter, client: Host, how: str, command: str
) -> None:
    vip_drill(
        machine,
        client,
        f"balancer {{master}} {how} (docker {command})",
        break_master=lambda master: docker(command, f"{LAB}-{master}"),
        restore_master=lambda master: restart_machine(machine, master),
        settle=90,
        gap=VIP_CRASH_GAP if command == "kill" else VIP_GAP,
    )


@pytest.mark.parametrize(
    ("how", "command"),
    [("killed", "systemctl kill --signal=KILL nginx"), ("stopped", "systemctl stop nginx")],
    ids=["kill", "stop"],
)
def test_losing_nginx_on_the_master_moves_the_vip(
    machine: MachineGetter, client: Host, how: str, command: str
) -> None:
    vip_drill(
        machine,
        client,
        f"nginx {how} on {{master}} ({command})",
        break_master=lambda master: machine(master).run(command),
        restore_master=lambda master: machine(master).run(
            "systemctl reset-failed nginx; systemctl start nginx"
        ),
        settle=90,
        gap=VIP_CRASH_GAP if how == "killed" else VIP_GAP,
    )


@pytest.mark.parametrize(
    ("how", "command"), [("killed", "kill"), ("stopped", "stop")], ids=["kill", "stop"]
)
def test_losing_an_app_machine_fails_no_get(
    machine: MachineGetter, client: Host, how: str, command: str
) -> None:
    """With a user's 5 s timeout, no GET fails: nginx gives up on the dead machine within its
    connect/read timeouts and sends the GET to the other. A POST under way on the dead machine
    may fail (nginx never sends a POST twice), but none is applied twice."""
    cookie = new_session(client, "app drill")
    try:
        with traffic(client, cookie, timeout=APP_USER_TIMEOUT) as loop:
            docker(command, f"{LAB}-app1")
            time.sleep(6)
    finally:
        restart_machine(machine, "app1")
    report = loop.report
    posts = posts_applied_once(client, cookie, report)
    figure(
        f"app1 {how} (docker {command}): {describe(report)}; {posts}; "
        f"served by {report['served_by']}"
    )
    assert report["get_failures"] == 0, report
    assert report["post_failures"] <= 1, report
    both = wait_until(
        lambda: (
            {request(client, "GET", "/hello")["served_by"] for _ in range(6)} == {"app1", "app2"}
        ),
        timeout=60,
        step=2,
    )
    assert both is not None, "app1 did not come back into the upstream"


def redis_primary(machine: MachineGetter) -> str | None:
    """The inventory name of the primary the running Sentinels name, if any answers."""
    found = sentinel_primary(machine, ask=[name for name in REDIS_MACHINES if running(name)])
    if found is None:
        return None
    return next(name for name in REDIS_MACHINES if address(name) == found[0])


@pytest.mark.parametrize(
    ("how", "command"), [("killed", "kill"), ("stopped", "stop")], ids=["kill", "stop"]
)
def test_losing_the_redis_primary_keeps_the_sessions(
    machine: MachineGetter, client: Host, how: str, command: str
) -> None:
    """Session reads and writes fail for at most REDIS_GAP while Sentinel promotes a replica,
    and nothing acknowledged is lost: the app writes with WAIT for a replica (the write is on
    a replica before the user hears 201) and Sentinel promotes the most up-to-date replica."""
    cookie = new_session(client, "before the failover")
    old = redis_primary(machine)
    assert old is not None, "no Sentinel answered"
    try:
        with traffic(client, cookie, get="/api/session") as loop:
            docker(command, f"{LAB}-{old}")
            promoted = wait_until(
                lambda: redis_primary(machine) not in (None, old), timeout=60, step=0.5
            )
            back = wait_until(
                lambda: request(client, "GET", "/api/session", cookie=cookie)["status"] == 200,
                timeout=60,
                step=0.5,
            )
            time.sleep(RESUMED_SECONDS)
    finally:
        restart_machine(machine, old)
    report = loop.report
    assert promoted is not None, "Sentinel promoted no replica"
    assert back is not None, "the app did not follow the new primary"
    posts = posts_applied_once(client, cookie, report)
    figure(
        f"redis primary {old} {how} (docker {command}): new primary after {promoted:.1f}s; "
        f"session requests failing for {report['failing_for']}s; {describe(report)}; {posts}"
    )
    assert "before the failover" in notes(client, cookie)
    assert report["longest_gap"] <= REDIS_GAP, report
    assert report["ok_for_last"] >= RESUMED_SECONDS, report
    # The old primary comes back as a replica of the new one.
    rejoined = wait_until(
        lambda: "role:slave" in (answers(machine(old), replication_info()) or ""),
        timeout=60,
        step=2,
    )
    assert rejoined is not None, f"{old} did not rejoin as a replica"


def replication_info() -> str:
    """The command that prints a Redis machine's own replication state."""
    return (
        f"redis-cli --no-auth-warning -p {port('redis_port')} --user default "
        f"--pass {SECRETS['vault_redis_password']} INFO replication"
    )


APP_MACHINES = ("app1", "app2")
# Pages each balancer is asked for to tell whether an app machine is in its upstream.
DRAIN_PROBES = 8


def current_releases(machine: MachineGetter) -> dict[str, str]:
    """App machine -> the release its `current` link points at."""
    return {
        name: machine(name).file("/opt/webstack-app/current").linked_to.rsplit("/", 1)[-1]
        for name in APP_MACHINES
    }


def drained_on(machine: MachineGetter, app: str) -> list[str]:
    """The balancers that send `app` no request: each is asked for DRAIN_PROBES pages on
    itself (not through the VIP, which reaches only one of them); one that never names `app`
    as the machine that served has it out of its upstream. Round robin over two machines
    names each in turn, so a balancer that still has `app` names it in about half the
    probes."""
    probe = (
        f"for i in $(seq {DRAIN_PROBES}); do curl -sk --max-time 5 -o /dev/null "
        "-w '%header{x-served-by}\\n' https://127.0.0.1/hello; done"
    )
    served = {lb: machine(lb).run(probe).stdout.split() for lb in BALANCERS}
    for lb, names in served.items():
        assert len(names) == DRAIN_PROBES, f"{lb} did not answer every probe: {names}"
    return [lb for lb, names in served.items() if app not in names]


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
    cookie = new_session(client, "rolling update")
    with traffic(client, cookie, post_interval=3) as loop:
        update = rolling_update(pytestconfig, app_version="rolling-update-test")
    report = loop.report
    assert update["rc"] == 0, update["tail"]
    posts = posts_applied_once(client, cookie, report)
    figure(f"rolling update: {describe(report)}; {posts}")
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
    cookie = new_session(client, "stopped rolling update")
    try:
        with traffic(client, cookie, post_interval=3) as loop:
            update = rolling_update(
                pytestconfig,
                app_version="rolling-update-broken",
                app_redis_password="not-the-sessions-password",
                app_ready_timeout=10,
            )
        assert update["rc"] != 0, update["tail"]
        # It failed at the app role's readiness check, on app1 only.
        assert "TASK [core : Fail with the journal]" in update["output"], update["tail"]
        assert play_recap(update["output"])["app1"]["failed"] == 1, update["tail"]
        after = current_releases(machine)
        assert "rolling-update-broken" in after["app1"], after
        assert after["app2"] == before["app2"], "the rollout went on past the failed machine"
        assert drained_on(machine, "app1") == ["lb1", "lb2"]
        assert drained_on(machine, "app2") == []
        report = loop.report
        figure(
            f"rolling update stopped at app1: {describe(report)}; "
            f"{posts_applied_once(client, cookie, report)}; served by {report['served_by']}"
        )
        assert report["failures"] == 0, report
    finally:
        restored = rolling_update(pytestconfig, app_version="rolling-update-test")
    assert restored["rc"] == 0, restored["tail"]
    assert current_releases(machine) == before
    assert drained_on(machine, "app1") == []


# Drops VRRP (IP protocol 112) both ways on a balancer, in a table of its own that the
# firewall role does not manage, so removing it restores exactly what was there.
BLOCK_VRRP = (
    "nft add table inet drill_split && "
    "nft add chain inet drill_split in '{ type filter hook input priority -10 ; }' && "
    "nft add chain inet drill_split out '{ type filter hook output priority -10 ; }' && "
    "nft add rule inet drill_split in meta l4proto 112 drop && "
    "nft add rule inet drill_split out meta l4proto 112 drop"
)
UNBLOCK_VRRP = "nft delete table inet drill_split"
SPLIT_ALERT = "VipHeldByBoth"


def monitor_api(port_name: str, path: str) -> object:
    """GET a path of Prometheus or Alertmanager on the monitoring machine (the admin network
    reaches them, as test_monitoring.py does); the decoded JSON."""
    url = f"http://{MONITOR}:{port(port_name)}{path}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def split_alert_state() -> str | None:
    """The state of the split-brain alert in Prometheus (pending, firing), or None."""
    answer = monitor_api("monitoring_prometheus_port", "/api/v1/alerts")
    states = [
        alert["state"]
        for alert in answer["data"]["alerts"]  # type: ignore[index]
        if alert["labels"].get("alertname") == SPLIT_ALERT
    ]
    return "firing" if "firing" in states else (states[0] if states else None)


def split_alert_in_alertmanager() -> bool:
    alerts = monitor_api("monitoring_alertmanager_port", "/api/v2/alerts?active=true")
    return any(alert["labels"].get("alertname") == SPLIT_ALERT for alert in alerts)  # type: ignore[union-attr]


def test_a_split_brain_is_alerted_and_heals_to_one_holder(
    machine: MachineGetter, client: Host
) -> None:
    """VRRP blocked between the live balancers: both claim the VIP, the operator's alert
    fires (Prometheus, and Alertmanager has it), and once adverts flow again the VIP ends on
    exactly one balancer and the stack serves. Bounded: 150 s for the alert, 30 s to heal."""
    only_one_holder(machine, timeout=90)
    quiet = wait_until(lambda: split_alert_state() is None, timeout=120, step=5)
    assert quiet is not None, f"{SPLIT_ALERT} is raised before the drill: {split_alert_state()}"
    started = time.monotonic()
    try:
        for name in BALANCERS:
            blocked = machine(name).run(BLOCK_VRRP)
            assert blocked.rc == 0, blocked.stderr
        both = wait_until(lambda: sorted(vip_holders(machine)) == list(BALANCERS), timeout=30)
        assert both is not None, f"VIP holders with VRRP blocked: {vip_holders(machine)}"
        firing = wait_until(lambda: split_alert_state() == "firing", timeout=150, step=3)
        assert firing is not None, f"{SPLIT_ALERT} did not fire: {split_alert_state()}"
        notified = wait_until(split_alert_in_alertmanager, timeout=30, step=2)
        assert notified is not None, f"Alertmanager has no {SPLIT_ALERT}"
        split = time.monotonic() - started
    finally:
        for name in BALANCERS:
            machine(name).run(UNBLOCK_VRRP)
    healed = wait_until(lambda: len(vip_holders(machine)) == 1, timeout=30)
    assert healed is not None, f"VIP holders after the split: {vip_holders(machine)}"
    holder = vip_holders(machine)[0]
    # Stays healed: still one holder a few adverts later, and the stack serves through it.
    time.sleep(3)
    assert vip_holders(machine) == [holder]
    served = [request(client, "GET", "/hello")["status"] for _ in range(10)]
    assert served == [200] * 10, served
    cleared = wait_until(lambda: split_alert_state() is None, timeout=120, step=5)
    figure(
        f"split brain (VRRP dropped both ways): both held the VIP after {both:.1f}s, "
        f"{SPLIT_ALERT} firing after {firing:.0f}s and in Alertmanager; one holder ({holder}) "
        f"{healed:.1f}s after the path came back ({split:.0f}s split); alert cleared after "
        f"{cleared if cleared is None else round(cleared)}s"
    )
    assert cleared is not None, f"{SPLIT_ALERT} stayed after the split healed"
