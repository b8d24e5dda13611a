"""The stack's textfile metrics: which VIPs a balancer holds, and which primary each Sentinel
names, kept up to date every few seconds by unprivileged scripts, written atomically."""

import time
from collections.abc import Callable

import pytest
from conftest import journal, wait_until
from exporter_client import ADDRESSES, MONITOR, PORTS, REDIS, TEXTFILE_DIR, VIP, scrape
from testinfra.host import Host

NODE = PORTS["prometheus-node-exporter"]
HELD = f'webstack_keepalived_vip_held{{vip="{VIP}"}}'
# The contract: refreshed at least every 5 s; one scrape more on top.
REFRESH = 8


def sentinel_series(series: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in series.items() if key.startswith("webstack_sentinel_")}


@pytest.mark.parametrize(
    ("name", "unit", "file"),
    [
        ("lb1", "webstack-vip-metrics", "webstack_keepalived_vip.prom"),
        ("redis1", "webstack-sentinel-metrics", "webstack_sentinel.prom"),
    ],
)
def test_scripts_write_atomically_as_an_unprivileged_user(
    machine: Callable[[str], Host], name: str, unit: str, file: str
) -> None:
    host = machine(name)
    assert host.service(unit).is_running, journal(host, unit)
    prom = host.file(f"{TEXTFILE_DIR}/{file}")
    assert (prom.user, prom.mode) == ("webstack-metrics", 0o644)
    assert host.user("webstack-metrics").uid != 0
    # Each refresh is a new file renamed over the old one (a new inode), never a rewrite.
    first = host.check_output(f"stat -c %i {prom.path}")
    changed = wait_until(
        lambda: host.check_output(f"stat -c %i {prom.path}") != first, timeout=REFRESH
    )
    assert changed is not None, f"{prom.path} was not replaced within {REFRESH} s"


def test_vip_held_follows_the_address(machine: Callable[[str], Host]) -> None:
    lb, monitor = machine("lb1"), machine(MONITOR)
    assert scrape(monitor, "lb1", NODE)[HELD] == 0
    try:
        added = lb.run(f"ip address add {VIP} dev eth0")
        assert added.rc == 0, added.stderr
        start = time.monotonic()
        held = wait_until(lambda: scrape(monitor, "lb1", NODE).get(HELD) == 1, timeout=REFRESH)
        assert held is not None, journal(lb, "webstack-vip-metrics")
        print(f"VIP held reported after {time.monotonic() - start:.1f} s")
    finally:
        lb.run(f"ip address del {VIP} dev eth0")
    released = wait_until(lambda: scrape(monitor, "lb1", NODE).get(HELD) == 0, timeout=REFRESH)
    assert released is not None, "webstack_keepalived_vip_held stayed 1 after the VIP left"


def test_every_sentinel_names_the_primary(machine: Callable[[str], Host]) -> None:
    monitor = machine(MONITOR)
    primary = [
        name
        for name in REDIS
        if 'role="master"'
        in next(
            key
            for key in scrape(monitor, name, PORTS["prometheus-redis-exporter"])
            if key.startswith("redis_instance_info{")
        )
    ]
    assert len(primary) == 1, primary
    wanted = f'webstack_sentinel_master{{address="{ADDRESSES[primary[0]]}:6379",master="webstack"}}'
    for name in REDIS:
        series = sentinel_series(scrape(monitor, name, NODE))
        assert series == {"webstack_sentinel_master_ok": 1, wanted: 1}, name


def test_sentinel_metrics_report_a_silent_sentinel(machine: Callable[[str], Host]) -> None:
    redis2, monitor = machine("redis2"), machine(MONITOR)
    since = redis2.check_output("date +%s")
    try:
        assert redis2.run("systemctl stop redis-sentinel").rc == 0
        silent = wait_until(
            lambda: (
                sentinel_series(scrape(monitor, "redis2", NODE))
                == {"webstack_sentinel_master_ok": 0}
            ),
            timeout=REFRESH,
        )
        assert silent is not None, journal(redis2, "webstack-sentinel-metrics")
    finally:
        redis2.run("systemctl start redis-sentinel")
    back = wait_until(
        lambda: (
            sentinel_series(scrape(monitor, "redis2", NODE)).get("webstack_sentinel_master_ok") == 1
        ),
        timeout=REFRESH + 10,
    )
    assert back is not None, journal(redis2, "webstack-sentinel-metrics")
    # One journal line per change, not one per refresh.
    lines = redis2.check_output(
        f"journalctl --no-pager -o cat -u webstack-sentinel-metrics --since @{since}"
    ).splitlines()
    assert 2 <= len(lines) <= 6, lines
