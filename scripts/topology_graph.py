"""The topology picture, generated from the lab inventory so that it cannot drift.

Reads the machines and groups with `ansible-inventory -i inventories/lab --list` (from the
repository root, so ansible.cfg applies; LAB_NAME and LAB_SUBNET are ignored, the picture shows
the default lab) and the virtual IPs with an ad-hoc `debug` on the `lb` group (the inventory
holds them as templates). Writes docs/topology.dot (graphviz): the balancer pair with the VIP,
the app machines, the Redis machines with their Sentinels, the client, the monitoring machine
when the inventory has a `monitoring` group, and an edge for each flow of traffic. Then renders
docs/topology.svg and docs/topology.png with graphviz's `dot` when it is installed.

    .venv/bin/python scripts/topology_graph.py           write the .dot, render the pictures
    .venv/bin/python scripts/topology_graph.py --check   change nothing; exit 1 if the .dot
                                                         differs (graphviz not needed)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = "inventories/lab"
DOCS = ROOT / "docs"
DOT = DOCS / "topology.dot"
COMMAND = ".venv/bin/python scripts/topology_graph.py"
# Tier groups, in the order traffic flows through them.
TIERS = ("client", "lb", "app", "redis", "monitoring")
# What the tiers share, as site.yml reads it: it wins over every role's defaults.
CONTRACT = ROOT / "group_vars" / "all" / "contract.yml"
_REFERENCE = re.compile(r"^\{\{\s*(\w+)\s*\}\}$")

COLOURS = {
    "client": "#f2f2f2",
    "lb": "#dbe9f6",
    "app": "#e2f0d9",
    "redis": "#fde9d9",
    "monitoring": "#ede4f5",
}


@dataclass
class Inventory:
    groups: dict[str, list[str]]
    hostvars: dict[str, dict[str, Any]]
    vips: list[str]

    def hosts(self, group: str) -> list[str]:
        return self.groups.get(group, [])

    def address(self, host: str) -> str:
        value = self.hostvars.get(host, {}).get("ansible_host", host)
        if isinstance(value, dict):  # ansible-inventory marks computed values unsafe
            value = value.get("__ansible_unsafe", host)
        return str(value)

    def setting(self, host: str, name: str, defaults: dict[str, Any]) -> Any:
        """A variable of the host as the inventory sets it, else the role's default."""
        return self.hostvars.get(host, {}).get(name, defaults.get(name))


def ansible_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LAB_NAME", "LAB_SUBNET")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_DEPRECATION_WARNINGS"] = "false"
    return env


def tool(name: str) -> str:
    """An Ansible command next to this Python (the .venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        sys.exit(f"topology_graph: {name} not found; run ./stack setup, then {COMMAND}")
    return found


def run_json(argv: list[str], env: dict[str, str]) -> Any:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"topology_graph: {' '.join(argv[:3])} failed:\n{result.stderr or result.stdout}")
    return json.loads(result.stdout)


def read_inventory() -> Inventory:
    env = ansible_env()
    listed = run_json([tool("ansible-inventory"), "-i", INVENTORY, "--list"], env)
    hostvars = listed.get("_meta", {}).get("hostvars", {})
    groups = {
        name: list(body.get("hosts", []))
        for name, body in listed.items()
        if name != "_meta" and isinstance(body, dict)
    }
    vips: list[str] = []
    if groups.get("lb"):
        env |= {
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "true",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        }
        expression = "{{ [keepalived_vip | default(''), keepalived_vip_secondary | default('')] }}"
        adhoc = [tool("ansible"), "lb", "-i", INVENTORY, "-m", "ansible.builtin.debug"]
        answer = run_json([*adhoc, "-a", json.dumps({"msg": expression})], env)
        for result in answer["plays"][0]["tasks"][0]["hosts"].values():
            for vip in result.get("msg", []):
                if vip and vip not in vips:
                    vips.append(vip)
    return Inventory(groups, hostvars, vips)


def role_defaults(role: str) -> dict[str, Any]:
    """A role's defaults with the site's contract over them."""
    values: dict[str, Any] = {}
    for path in (ROOT / "roles" / role / "defaults" / "main.yml", CONTRACT):
        # Ansible-only tags (!unsafe) make a file unreadable here: keep what was read.
        with contextlib.suppress(yaml.YAMLError):
            values.update((yaml.safe_load(path.read_text()) or {}) if path.is_file() else {})
    return values


def scrape_plan(inv: Inventory, monitor: str) -> dict[str, list[str]]:
    """Host -> the jobs that scrape it ("node :9100"), from the monitoring role's
    monitoring_scrape_jobs (inventory first, then the contract and the role's defaults)."""
    defaults = role_defaults("monitoring")

    def resolve(value: Any) -> Any:
        # Plain references ("{{ monitoring_node_groups }}") are followed; other templates kept.
        match = _REFERENCE.match(value) if isinstance(value, str) else None
        return resolve(inv.setting(monitor, match.group(1), defaults)) if match else value

    jobs = resolve(inv.setting(monitor, "monitoring_scrape_jobs", defaults)) or []
    plan: dict[str, list[str]] = {}
    for job in jobs:
        groups = [resolve(group) for group in resolve(job.get("groups", []))]
        hosts = {host: None for group in groups for host in inv.hosts(str(group))}
        for host in hosts:
            plan.setdefault(host, []).append(f"{job['name']} :{resolve(job.get('port'))}")
    return plan


# --- The graph ------------------------------------------------------------------------------


def quote(text: str) -> str:
    """A graphviz string; line breaks become graphviz's centred line break, \\n."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def attributes(**values: str) -> str:
    return "[" + ", ".join(f"{key}={quote(value)}" for key, value in values.items()) + "]"


def node(name: str, lines: Iterable[str], **extra: str) -> str:
    return f"    {quote(name)} {attributes(label=chr(10).join(lines), **extra)};"


def edge(tail: str, head: str, **extra: str) -> str:
    return f"    {quote(tail)} -> {quote(head)} {attributes(**extra)};"


def peer_edges(hosts: list[str], **looks: str) -> list[str]:
    """Two-way edges between every pair of the hosts (peers of one tier)."""
    return [
        edge(one, other, dir="both", constraint="false", **looks)
        for index, one in enumerate(hosts)
        for other in hosts[index + 1 :]
    ]


def graph(inv: Inventory) -> str:
    app = role_defaults("app")
    nginx = role_defaults("nginx")
    redis = role_defaults("redis")
    lines = [
        f"// Generated by scripts/topology_graph.py from {INVENTORY}; do not edit.",
        f"// Change the inventory, then run: {COMMAND}",
        "digraph webstack {",
        "    graph [rankdir=LR, ranksep=1.1, nodesep=0.35, fontname=Helvetica, fontsize=12,",
        f'           labelloc=t, label="webstack lab: machines and traffic ({INVENTORY})"];',
        '    node [shape=box, style="rounded,filled", fontname=Helvetica, fontsize=10];',
        "    edge [fontname=Helvetica, fontsize=9];",
    ]

    def cluster(group: str, title: str, members: list[str]) -> None:
        lines.append(f"    subgraph cluster_{group} {{")
        lines.append(f"        graph [label={quote(title)}, style=dashed, color=gray50];")
        lines.extend("    " + member for member in members)
        lines.append("    }")

    clients = inv.hosts("client")
    balancers = inv.hosts("lb")
    apps = inv.hosts("app")
    redises = inv.hosts("redis")
    monitors = inv.hosts("monitoring")

    for host in clients:
        lines.append(
            node(
                host,
                [host, inv.address(host), "client (tests, benchmarks)"],
                fillcolor=COLOURS["client"],
            )
        )

    vip_nodes = [f"VIP {vip}" for vip in inv.vips]
    if balancers:
        members = [
            node(
                vip, [vip, "keepalived VRRP"], shape="ellipse", style="filled", fillcolor="#fff2cc"
            )
            for vip in vip_nodes
        ]
        for host in balancers:
            https = inv.setting(host, "nginx_https_port", nginx)
            http = inv.setting(host, "nginx_http_port", nginx)
            status = inv.setting(host, "nginx_status_port", nginx)
            members.append(
                node(
                    host,
                    [
                        host,
                        inv.address(host),
                        f"nginx :{https} (:{http} redirects)",
                        f"keepalived, check 127.0.0.1:{status}/healthz",
                    ],
                    fillcolor=COLOURS["lb"],
                )
            )
        cluster("lb", "lb: nginx + keepalived", members)

    if apps:
        members = [
            node(
                host,
                [
                    host,
                    inv.address(host),
                    f"gunicorn + gevent :{inv.setting(host, 'app_port', app)}",
                    "bottle app",
                ],
                fillcolor=COLOURS["app"],
            )
            for host in apps
        ]
        cluster("app", "app: gunicorn (gevent workers), systemd socket", members)

    if redises:
        members = [
            node(
                host,
                [
                    host,
                    inv.address(host),
                    f"redis :{inv.setting(host, 'redis_port', redis)}",
                    f"sentinel :{inv.setting(host, 'redis_sentinel_port', redis)}",
                ],
                fillcolor=COLOURS["redis"],
            )
            for host in redises
        ]
        cluster("redis", "redis: sessions, one primary + replicas, a Sentinel each", members)

    tiered = {host for group in TIERS for host in inv.hosts(group)}
    for host in inv.hostvars:
        if host not in tiered:
            lines.append(node(host, [host, inv.address(host), "no tier"], fillcolor="#ffffff"))

    if monitors:
        members = [
            node(
                host,
                [host, inv.address(host), "Prometheus :9090", "Alertmanager :9093"],
                fillcolor=COLOURS["monitoring"],
            )
            for host in monitors
        ]
        cluster("monitoring", "monitoring", members)

    # Users reach the VIP; the VIP lives on one balancer at a time.
    targets = vip_nodes or balancers
    https_port = inv.setting(balancers[0], "nginx_https_port", nginx) if balancers else 443
    for client in clients:
        for target in targets:
            lines.append(edge(client, target, label=f"HTTPS :{https_port}", color="#1f4e79"))
    for vip in vip_nodes:
        for host in balancers:
            lines.append(edge(vip, host, label="held by one", style="dashed", color="#b58900"))
    lines += peer_edges(balancers, label="VRRP adverts", style="dashed", color="#b58900")
    # nginx proxies to every app machine; every app machine uses Redis and the Sentinels.
    for host in balancers:
        for backend in apps:
            port = inv.hostvars.get(backend, {}).get(
                "nginx_backend_port", inv.setting(backend, "app_port", app)
            )
            lines.append(edge(host, backend, label=f"HTTP :{port}", color="#1f4e79"))
    for host in apps:
        for store in redises:
            ports = (
                f":{inv.setting(store, 'redis_port', redis)} "
                f"/ :{inv.setting(store, 'redis_sentinel_port', redis)}"
            )
            lines.append(edge(host, store, label=ports, color="#a94442"))
    lines += peer_edges(
        redises, label="Sentinel gossip, replication", style="dotted", color="#a94442"
    )
    # Prometheus scrapes the exporters and the app of the other machines (itself: not drawn).
    for monitor in monitors:
        plan = scrape_plan(inv, monitor)
        for host in [host for group in TIERS for host in inv.hosts(group)]:
            if host in plan and host not in monitors:
                lines.append(
                    edge(
                        monitor,
                        host,
                        label="scrape " + ", ".join(plan[host]),
                        style="dashed",
                        color="#7b5ea7",
                        fontcolor="#7b5ea7",
                    )
                )
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_file: Path) -> None:
    dot = shutil.which("dot")
    if not dot:
        print(
            "topology_graph: graphviz's dot not found, so the .svg and .png were not rendered "
            "(apt-get install graphviz)",
            file=sys.stderr,
        )
        return
    for fmt, extra in (("svg", []), ("png", ["-Gdpi=96"])):
        target = dot_file.with_suffix(f".{fmt}")
        subprocess.run([dot, f"-T{fmt}", *extra, str(dot_file), "-o", str(target)], check=True)
        print(f"topology_graph: rendered {target.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if docs/topology.dot drifted"
    )
    args = parser.parse_args(argv)

    wanted = graph(read_inventory())
    current = DOT.read_text() if DOT.is_file() else ""
    if args.check:
        if current != wanted:
            print(
                f"topology_graph: {DOT.relative_to(ROOT)} does not match {INVENTORY}; "
                f"to fix, run {COMMAND}",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != wanted:
        DOT.write_text(wanted)
        print(f"topology_graph: wrote {DOT.relative_to(ROOT)}")
    render(DOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
