"""The VIPs follow a healthy balancer: nginx failures, machine stops and crashes, recoveries.

The tests run in order and each leaves the pair healthy for the next. Every failover is timed
(looking at both machines every 0.2 s) and printed, and all timings are printed again at the end.
After every transition both machines are watched for 3 adverts and a margin (a machine that
missed the change would claim a VIP by then), a machine being stopped until it is down.
"""

import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator

import pair
import pytest
from pair import CAP, STEP, Balancer, waited

# A failover must be done within this many seconds (measured: a few seconds).
BOUND = 10.0
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
        balancer.host.run("systemctl start nginx")
    print("\nkeepalived failover times (s):")
    for what, seconds in measured.items():
        print(f"  {what}: {seconds:.1f}")


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


def test_nginx_failure_moves_the_vip(balancers, vips, watch) -> None:
    lb1, lb2 = balancers["lb1"], balancers["lb2"]
    wall = time.time()
    start = time.monotonic()
    lb1.host.check_output("systemctl stop nginx")
    want = dict.fromkeys(vips, "lb2")
    waited(held_by(balancers, vips, want), CAP, explain(balancers, vips))
    seconds = time.monotonic() - start
    record("nginx stopped on the master", seconds)
    assert seconds < BOUND
    settle(balancers, vips, want, watch)
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


def lose_machine(balancers, vips, preempt, watch, victim, crash: bool, what: str):
    """Takes `victim` down (docker stop, or kill when `crash`), checks the other balancer
    holds every VIP within the bound and alone, starts the victim again and checks the VIPs
    come back per the preemption setting. Returns the balancer that took over."""
    other = next(b for b in balancers.values() if b is not victim)
    before = layout(balancers, vips)
    start = time.monotonic()
    victim.take_down(crash=crash)  # the victim is watched until it is down
    want = dict.fromkeys(vips, other.name)
    try:
        waited(held_by(balancers, vips, want), CAP, explain(balancers, vips))
        record(what, time.monotonic() - start)
        assert measured[what] < BOUND
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


def test_stopping_the_master_machine_moves_the_vip(balancers, vips, preempt, watch) -> None:
    master = balancers[holders(balancers, vips["VI_1"])[0]]
    what = f"machine {master.name} stopped (clean shutdown)"
    lose_machine(balancers, vips, preempt, watch, master, crash=False, what=what)


def test_a_crashed_machine_loses_its_vip(balancers, vips, preempt, watch) -> None:
    # Kill (no clean shutdown, no goodbye advert) the holder of the last VIP: the peer takes
    # over once it has missed three adverts.
    last = list(vips)[-1]
    victim = balancers[holders(balancers, vips[last])[0]]
    wall = time.time()
    what = f"machine {victim.name} killed (crash)"
    other = lose_machine(balancers, vips, preempt, watch, victim, crash=True, what=what)
    # The journal keeps the line after the victim is back.
    assert notified(other, wall, f"{last} is now MASTER")
