"""What the exporters' tests share: the machines, and scraping an exporter the way Prometheus
does, from the monitoring machine (redis3), over the private network. The fixtures of
molecule/conftest.py (machine, ...) come with pytest; this module holds plain helpers."""

from __future__ import annotations

import re

import pytest
import testinfra
from conftest import addresses
from testinfra.host import Host

# The scenario's machines (molecule.yml) and their private addresses, from the inventory.
ADDRESSES = addresses()
MONITOR = "redis3"  # the machine of group monitoring
REDIS = ["redis1", "redis2", "redis3"]
VIP = "10.78.7.100/24"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"

# Exporter -> its port; what runs where (the role's defaults, from the machine's groups).
PORTS = {
    "prometheus-node-exporter": 9100,
    "prometheus-nginx-exporter": 9113,
    "prometheus-redis-exporter": 9121,
}
UNITS = {
    "lb1": ["prometheus-node-exporter", "prometheus-nginx-exporter", "webstack-vip-metrics"],
    **{
        name: ["prometheus-node-exporter", "prometheus-redis-exporter", "webstack-sentinel-metrics"]
        for name in REDIS
    },
}
ALL_UNITS = sorted({unit for units in UNITS.values() for unit in units})

# Fetches a URL from the machine it runs on and prints the body (exit 1 on any failure).
FETCH = (
    "python3 -c 'import sys,urllib.request;"
    " sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' {url}"
)
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)$")


def fetch(source: Host, url: str) -> str:
    """The body at url, fetched from `source`; fails the test when it cannot be fetched."""
    result = source.run(FETCH.format(url=url))
    assert result.rc == 0, f"{url} from {source.backend.get_hostname()}: {result.stderr}"
    return result.stdout


def samples(text: str) -> dict[str, float]:
    """Series (name with its labels, as the exporter wrote them) -> value."""
    found = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            found[match.group(1)] = float(match.group(2))
    return found


def scrape(monitor: Host, name: str, port: int) -> dict[str, float]:
    """The series of the exporter on machine `name` at `port`, scraped from `monitor`."""
    return samples(fetch(monitor, f"http://{ADDRESSES[name]}:{port}/metrics"))


def variables(pytestconfig: pytest.Config, name: str) -> dict:
    """That machine's inventory variables (secrets included)."""
    inventory = pytestconfig.getoption("ansible_inventory")
    host = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
    return host.ansible.get_variables()
