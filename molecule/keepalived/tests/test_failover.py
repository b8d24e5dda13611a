"""The VIPs follow a healthy balancer: nginx failures, machine stops and crashes, recoveries;
a busy nginx keeps them.

The tests run in order and each leaves the pair healthy for the next. Every failover is timed
(from just before the failure until the other balancer itself sees the VIP, looking every
10 ms) and printed, and all timings are printed again at the end. After every transition both
machines are watched for 3 adverts and a margin (a machine that missed the change would claim
a VIP by then), a machine being stopped until it is down.
"""

import os
import statistics
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator

import pair
import pytest
from pair import CAP, STEP, Balancer, waited
from playbooks import play_recap, run_playbook

# nginx stopped or killed: the VIP is on the other balancer within this many seconds (its
# tracked unit puts the holder in FAULT at once, and the peer takes over after its skew time).
NGINX_BOUND = 1.0
# A machine lost: within 4 adverts and this margin (a crash is noticed after 3 missed adverts
# and a skew below one advert; docker's kill itself takes part of it).
MACHINE_MARGIN = 1.0
# nginx frozen (SIGSTOP: no CPU at all, the extreme of a starved nginx) for this long keeps the
# VIP: more than twice the fall window of the old check (2 failures 1 s apart, 3 s timeout).
FROZEN = 8.0
# Machines take this long at most to boot and answer SSH again.
BOOT = 90.0
# docker stop returns within this many seconds (its 10 s grace period, then a kill).
STOPPED = 30.0
# Seconds watched after a transition beyond 3 adverts.
MARGIN = 3.0

measured: dict[str, float] = {}


@pytest.fixture(scope="module")
def settings() -> dict:
    return pair.settings()


@pytest.fixture(scope="module")
def balancers() -> dict[str, Balancer]:
    return pair.balancers()


def record(what: str, seconds: float) -> None:
    measured[what] = seconds
    print(f"\nkeepalived failover: {what}: {seconds:.1f} s")


@pytest.fixture(scope="module")
def vips(settings: dict) -> dict[str, str]:
    """Instance name -> VIP address (without prefix)."""
    found = {"VI_1": settings["keepalived_vip"].split("/")[0]}
    if settings.get("keepalived_vip_secondary"):
        found["VI_2"] = settings["keepalived_vip_secondary"].split("/")[0]
    return found


@pytest.fixture(scope="module")
def watch(settings: dict) -> float:
    """Seconds to watch after a transition: 3 adverts, then a margin."""
    return 3 * float(settings.get("keepalived_advert_int", 1)) + MARGIN


@pytest.fixture(scope="module")
def preempt(settings: dict) -> tuple[str, float]:
    return settings.get("keepalived_preempt", "delay"), float(
        settings.get("keepalived_preempt_delay", 60)
    )


@pytest.fixture(scope="module", autouse=True)
def healthy_at_the_end(balancers: dict[str, Balancer]) -> Iterator[None]:
    """Whatever happens, leave both machines running with nginx started; print the timings."""
    yield
    for balancer in balancers.values():
        balancer.wait_down()
        if not balancer.up:
            start_machine(balancer)
        balancer.host.run("systemctl kill --signal=CONT nginx; systemctl start nginx")
    print("\nkeepalived failover times (s):")
    for what, seconds in measured.items():
        print(f"  {what}: {seconds:.1f}")


@pytest.fixture(scope="module")
def machine_bound(settings: dict) -> float:
    return 4 * float(settings.get("keepalived_advert_int", 0.2)) + MACHINE_MARGIN


def holders(balancers: dict[str, Balancer], address: str) -> list[str]:
    return [b.name for b in balancers.values() if address in b.addresses()]


def layout(balancers: dict[str, Balancer], vips: dict[str, str]) -> dict[str, list[str]]:
    """Instance -> the machines holding its VIP now."""
    held = {b.name: b.addresses() for b in balancers.values()}
    return {name: [m for m, addrs in held.items() if vip in addrs] for name, vip in vips.items()}


def explain(balancers: dict[str, Balancer], vips: dict[str, str]) -> Callable:
    def text() -> str:
        parts = [f"VIPs held: {layout(balancers, vips)}"]
        for b in balancers.values():
            parts.append(f"--- {b.name} journal:\n{b.journal()}")
        return "\n".join(parts)

    return text


def settle(balancers, vips, want: dict[str, str], watch: float) -> None:
    """For `watch` seconds after a transition, and until every machine being taken down is
    down, every VIP is on exactly the wanted machine, never on two."""
    start = time.monotonic()
    while time.monotonic() - start < watch or any(b.going_down for b in balancers.values()):
        now = layout(balancers, vips)
        assert now == {name: [want[name]] for name in vips}, (
            f"{time.monotonic() - start:.1f} s after the transition: {now}"
        )
        if time.monotonic() - start > watch + STOPPED:
            pytest.fail(f"docker did not stop a machine within {watch + STOPPED:.0f} s")
        time.sleep(STEP)


def held_by(balancers, vips, want: dict[str, str]) -> Callable[[], bool]:
    return lambda: layout(balancers, vips) == {name: [want[name]] for name in vips}


def notified(balancer: Balancer, since: float, line: str) -> bool:
    journal = balancer.host.run(
        f"journalctl --no-pager -o cat -t keepalived-notify --since @{int(since) - 1}"
    ).stdout
    return line in journal


def start_machine(balancer: Balancer) -> float:
    """Start the machine's container; when keepalived runs in it, the time of the start."""
    started = time.monotonic()
    subprocess.run(
        ["docker", "start", balancer.container], check=True, timeout=60, stdout=subprocess.DEVNULL
    )
    balancer.up = True
    deadline = time.monotonic() + BOOT
    while True:
        try:
            if balancer.host.run("systemctl is-active keepalived").stdout.strip() == "active":
                return started
        except RuntimeError:  # SSH not answering yet
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{balancer.name} did not run keepalived within {BOOT:.0f} s of its start")
        time.sleep(1)


def answers(vip: str) -> str:
    """Name of the machine that answers HTTP on the VIP (the stand-in nginx says it)."""
    try:
        with urllib.request.urlopen(f"http://{vip}/", timeout=2) as response:
            return response.read().decode().strip()
    except OSError as error:
        return f"no answer ({error})"


def comes_back(balancers, vips, preempt, watch, since: float, want_back, stay, what) -> None:
    """After a recovery at `since`: the VIPs go back to want_back, or stay, per the policy."""
    mode, delay = preempt
    if mode == "nopreempt":
        # Give the recovered machine every chance to take a VIP back: it must not.
        for _ in range(int(8 / STEP)):
            assert held_by(balancers, vips, stay)(), layout(balancers, vips)
            time.sleep(STEP)
        return
    timeout = (delay if mode == "delay" else 0) + CAP
    waited(held_by(balancers, vips, want_back), timeout, explain(balancers, vips))
    seconds = time.monotonic() - since
    record(what, seconds)
    if mode == "delay":
        # Not before the delay has passed: a flapping machine does not bounce the VIP.
        assert seconds >= delay, f"took the VIP back after {seconds:.1f} s, before {delay} s"
    settle(balancers, vips, want_back, watch)


def test_each_vip_is_on_exactly_one_machine(balancers, vips, preempt, watch) -> None:
    # After the first start the pair may need the preemption delay to settle on priorities.
    want = {"VI_1": "lb1", "VI_2": "lb2"}
    want = {name: want[name] for name in vips}
    timeout = preempt[1] + CAP
    waited(held_by(balancers, vips, want), timeout, explain(balancers, vips))
    settle(balancers, vips, want, watch)
    for name, vip in vips.items():
        assert answers(vip) == want[name]


def run_timed(balancer: Balancer, command: str) -> float:
    """Runs `command` on the machine; returns the machine's wall time just before it ran (the
    SSH round trip left out of the failover times)."""
    return float(balancer.host.check_output(f"date +%s.%N; {command}").split()[0])


def nginx_goes(balancers, vips, watch, how: str, what: str) -> float:
    """Runs `how` on lb1 (which holds VI_1) and checks that every VIP is on lb2, alone, within
    NGINX_BOUND of the command's start; returns the wall time of the start."""
    lb1, lb2 = balancers["lb1"], balancers["lb2"]
    watcher = lb2.watch_for(vips["VI_1"])
    wall = run_timed(lb1, how)
    seconds = pair.appeared_after(watcher, wall)
    assert seconds is not None, explain(balancers, vips)()
    record(what, seconds)
    assert seconds <= NGINX_BOUND, explain(balancers, vips)()
    want = dict.fromkeys(vips, "lb2")
    waited(held_by(balancers, vips, want), CAP, explain(balancers, vips))
    settle(balancers, vips, want, watch)
    return wall


def test_nginx_failure_moves_the_vip(balancers, vips, watch) -> None:
    lb1, lb2 = balancers["lb1"], balancers["lb2"]
    wall = nginx_goes(balancers, vips, watch, "systemctl stop nginx", "nginx stopped on the master")
    # The notify script logged both sides of the change to the journal.
    waited(lambda: notified(lb1, wall, "VI_1 is now FAULT"), 5, lambda: lb1.journal(lines=40))
    waited(lambda: notified(lb2, wall, "VI_1 is now MASTER"), 5, lambda: lb2.journal(lines=40))
    # Clients that use the VIP now reach the other balancer (its gratuitous ARP moved it).
    waited(lambda: answers(vips["VI_1"]) == "lb2", 5, lambda: answers(vips["VI_1"]))


def test_nginx_recovery_follows_the_preemption_policy(balancers, vips, preempt, watch) -> None:
    since = time.monotonic()
    balancers["lb1"].host.check_output("systemctl start nginx")
    stay = dict.fromkeys(vips, "lb2")
    back = {"VI_1": "lb1", "VI_2": "lb2"}
    back = {name: back[name] for name in vips}
    what = "VIP back on lb1 after its nginx started again"
    comes_back(balancers, vips, preempt, watch, since, back, stay, what)


def test_a_frozen_nginx_keeps_the_vip(balancers, vips, preempt, watch) -> None:
    """nginx alive but not served any CPU for FROZEN seconds (every process SIGSTOPped) keeps
    the VIP, then serves again: a busy balancer is not a dead one."""
    lb1 = balancers["lb1"]
    # Where the previous test left the VIPs (nopreempt: all on lb2): back on lb1 first.
    if holders(balancers, vips["VI_1"]) != ["lb1"]:
        lb2 = balancers["lb2"]
        lb2.host.check_output("systemctl restart keepalived")
        waited(lambda: holders(balancers, vips["VI_1"]) == ["lb1"], CAP, explain(balancers, vips))
    before = layout(balancers, vips)
    want = {name: holder[0] for name, holder in before.items()}
    healthz = "/usr/bin/curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:8081/healthz"
    lb1.host.check_output("systemctl kill --signal=STOP nginx")
    try:
        start = time.monotonic()
        # Positive control: nginx really does not answer (the old check failed after 2 s).
        assert lb1.host.run(healthz).rc != 0, "nginx still answers while frozen"
        while time.monotonic() - start < FROZEN:
            assert held_by(balancers, vips, want)(), (
                f"{time.monotonic() - start:.1f} s into the freeze: {layout(balancers, vips)}"
            )
            time.sleep(STEP)
    finally:
        lb1.host.check_output("systemctl kill --signal=CONT nginx")
    assert lb1.host.run(healthz).rc == 0
    print(f"\nkeepalived: nginx frozen {FROZEN:.0f} s on lb1, the VIPs stayed: {before}")
    settle(balancers, vips, want, watch)


def test_a_killed_nginx_moves_the_vip(balancers, vips, preempt, watch) -> None:
    # Every nginx process SIGKILLed (no clean exit): systemd sees the main process die.
    lb1 = balancers["lb1"]
    wall = nginx_goes(
        balancers, vips, watch, "systemctl kill --signal=KILL nginx", "nginx killed on the master"
    )
    waited(lambda: notified(lb1, wall, "VI_1 is now FAULT"), 5, lambda: lb1.journal(lines=40))
    since = time.monotonic()
    lb1.host.check_output("systemctl start nginx")
    stay = dict.fromkeys(vips, "lb2")
    back = {"VI_1": "lb1", "VI_2": "lb2"}
    back = {name: back[name] for name in vips}
    what = "VIP back on lb1 after its killed nginx started again"
    comes_back(balancers, vips, preempt, watch, since, back, stay, what)


def lose_machine(balancers, vips, preempt, watch, victim, crash: bool, what: str, bound: float):
    """Takes `victim` down (docker stop, or kill when `crash`), checks the other balancer
    holds every VIP within the bound and alone, starts the victim again and checks the VIPs
    come back per the preemption setting. Returns the balancer that took over."""
    other = next(b for b in balancers.values() if b is not victim)
    before = layout(balancers, vips)
    # Timed on the VIP the victim holds (the first one it holds).
    vip = next(vips[name] for name, holder in before.items() if holder == [victim.name])
    watcher = other.watch_for(vip)
    wall = time.time()
    victim.take_down(crash=crash)  # the victim is watched until it is down
    want = dict.fromkeys(vips, other.name)
    try:
        seconds = pair.appeared_after(watcher, wall)
        assert seconds is not None, explain(balancers, vips)()
        record(what, seconds)
        assert seconds <= bound, explain(balancers, vips)()
        waited(held_by(balancers, vips, want), CAP, explain(balancers, vips))
        settle(balancers, vips, want, watch)
    finally:
        victim.wait_down()
    print(f"{victim.name} was seen {victim.seen_going_down} times until it was down")
    since = start_machine(victim)
    back = {name: holder[0] for name, holder in before.items()}
    comes_back(
        balancers,
        vips,
        preempt,
        watch,
        since,
        back,
        want,
        f"VIP back on {victim.name} after its start",
    )
    return other


def test_stopping_the_master_machine_moves_the_vip(
    balancers, vips, preempt, watch, machine_bound
) -> None:
    master = balancers[holders(balancers, vips["VI_1"])[0]]
    what = f"machine {master.name} stopped (clean shutdown)"
    lose_machine(balancers, vips, preempt, watch, master, False, what, machine_bound)


def test_a_crashed_machine_loses_its_vip(balancers, vips, preempt, watch, machine_bound) -> None:
    # Kill (no clean shutdown, no goodbye advert) the holder of the last VIP: the peer takes
    # over once it has missed three adverts.
    last = list(vips)[-1]
    victim = balancers[holders(balancers, vips[last])[0]]
    wall = time.time()
    what = f"machine {victim.name} killed (crash)"
    other = lose_machine(balancers, vips, preempt, watch, victim, True, what, machine_bound)
    # The journal keeps the line after the victim is back.
    assert notified(other, wall, f"{last} is now MASTER")


def settled_after_recovery(balancers, vips, preempt, victim: Balancer, since: float, before):
    """After `victim` recovered at wall time `since`: every instance of it is MASTER or
    BACKUP again and, unless nopreempt, the VIPs are back where they were."""

    def ready() -> bool:
        journal = victim.host.run(
            f"journalctl --no-pager -o cat -t keepalived-notify --since @{int(since) - 1}"
        ).stdout
        return all(
            f"{name} is now BACKUP" in journal or f"{name} is now MASTER" in journal
            for name in vips
        )

    waited(ready, CAP, explain(balancers, vips))
    mode, delay = preempt
    if mode != "nopreempt":
        back = {name: holder[0] for name, holder in before.items()}
        waited(held_by(balancers, vips, back), delay + CAP, explain(balancers, vips))


def test_the_default_nopreempt_gives_no_second_blip(
    pytestconfig, balancers, vips, watch, machine_bound
) -> None:
    """The role's default preemption policy (the scenario runs active-active with a delay):
    a crashed machine that comes back leaves the VIPs where they are."""

    def converge(*extra: str) -> None:
        played = run_playbook(pytestconfig, "converge.yml", *extra)
        recap = play_recap(played.stdout)
        assert played.returncode == 0, played.stdout[-3000:]
        assert all(c["failed"] == 0 for c in recap.values()), played.stdout[-3000:]

    converge("--extra-vars", "keepalived_preempt=nopreempt")
    try:
        victim = balancers[holders(balancers, vips["VI_1"])[0]]
        what = f"machine {victim.name} killed, nopreempt"
        lose_machine(balancers, vips, ("nopreempt", 0), watch, victim, True, what, machine_bound)
    finally:
        converge()  # the scenario's own policy again, for what follows


# Moves keepalived's processes into a cpuacct cgroup of their own (systemd in the container
# manages no cpuacct hierarchy, cgroup v1), waits, prints the CPU nanoseconds they used (their
# scripts included: children start in their parent's cgroup), and moves them back. A check
# that ends while it is moved is skipped (it was counted, or it is gone).
CPU_COST = """
set -u
cg=/sys/fs/cgroup/cpuacct$(cut -d: -f3 /proc/1/cgroup | grep -m1 '^/docker/' | cut -d/ -f1-3)
mkdir -p "$cg/keepalived-cost" || exit 1
for pid in $(systemctl show -p ControlGroup --value keepalived.service | xargs -I@ \
        cat /sys/fs/cgroup/systemd@/cgroup.procs); do
    echo "$pid" > "$cg/keepalived-cost/cgroup.procs" 2>/dev/null
done
start=$(cat "$cg/keepalived-cost/cpuacct.usage")
sleep {seconds}
echo $(( $(cat "$cg/keepalived-cost/cpuacct.usage") - start ))
for pid in $(cat "$cg/keepalived-cost/cgroup.procs"); do
    echo "$pid" > "$cg/cgroup.procs" 2>/dev/null
done
rmdir "$cg/keepalived-cost"
"""


@pytest.mark.skipif(
    not os.environ.get("KEEPALIVED_TRIALS"),
    reason="measurement only: KEEPALIVED_TRIALS=N molecule verify -s keepalived",
)
def test_cpu_cost_of_the_checks(balancers) -> None:
    """keepalived's CPU time (its checks included) over a minute on each balancer, idle."""
    seconds = 60
    runs = {
        b.name: subprocess.Popen(
            ["docker", "exec", b.container, "sh", "-c", CPU_COST.format(seconds=seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for b in balancers.values()
    }
    for name, run in runs.items():
        out, _ = run.communicate(timeout=seconds + 30)
        assert run.returncode == 0, out
        used = int(out.split()[-1]) / 1e6
        share = used / seconds / 10
        print(f"\nkeepalived CPU on {name}: {used:.0f} ms in {seconds} s ({share:.2f} %)")


@pytest.mark.skipif(
    not os.environ.get("KEEPALIVED_TRIALS"),
    reason="measurement only: KEEPALIVED_TRIALS=N molecule verify -s keepalived",
)
@pytest.mark.parametrize("event", ["nginx killed", "machine killed"])
def test_failover_trials(balancers, vips, preempt, event: str) -> None:
    """KEEPALIVED_TRIALS times: SIGKILL of every nginx process on the VIP holder, or docker
    kill of the holder's machine; the time from the kill until the VIP is on the other
    balancer, seen by the other balancer itself every 10 ms. Prints median, min and max."""
    times = []
    for _ in range(int(os.environ["KEEPALIVED_TRIALS"])):
        victim = balancers[holders(balancers, vips["VI_1"])[0]]
        other = next(b for b in balancers.values() if b is not victim)
        before = layout(balancers, vips)
        watcher = other.watch_for(vips["VI_1"])
        if event == "nginx killed":
            killed = run_timed(victim, "systemctl kill --signal=KILL nginx")
        else:
            killed = time.time()
            victim.take_down(crash=True)
        seconds = pair.appeared_after(watcher, killed)
        assert seconds is not None, explain(balancers, vips)()
        times.append(seconds)
        print(f"\nkeepalived trial: {event}: VIP on {other.name} after {seconds:.2f} s")
        if event != "nginx killed":
            victim.wait_down()
        recovered = time.time()
        if event == "nginx killed":
            victim.host.check_output("systemctl start nginx")
        else:
            start_machine(victim)
        settled_after_recovery(balancers, vips, preempt, victim, recovered, before)
    summary = (
        f"median {statistics.median(times):.2f} s, min {min(times):.2f}, max {max(times):.2f}"
        f" ({len(times)} trials: {', '.join(f'{t:.2f}' for t in times)})"
    )
    print(f"\nkeepalived trials: {event}: {summary}")
    record(f"{event}, median of {len(times)} trials", statistics.median(times))
