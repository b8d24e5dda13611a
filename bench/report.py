"""The bench's report: machine descriptions, and the tables and plots of docs/benchmarks/.

    report.py machine --out FILE
        Describes this computer now (CPU, cores, RAM, kernel, load, running containers) as
        JSON; bench/run.sh calls it at the start and at the end of a run.
    report.py sample --out FILE
        The lab machines now, as JSON, read from the host: each container's cgroup CPU time
        and memory, and in the balancers and app machines each nginx and gunicorn process's
        memory and sockets and the kernel's TCP counters. bench/tasks/case.yml calls it
        before and after every case (and while connections are held).
    report.py build --run DIR --label LABEL [--docs docs/benchmarks]
        Reads a run's raw results (DIR, written by bench/run.sh and the bench playbooks),
        keeps them as DOCS/runs/LABEL.json, then redraws DOCS from every kept run: the plots
        (PNG) and the generated parts of README.md, between its `<!-- bench:NAME -->` and
        `<!-- /bench:NAME -->` markers. The run labelled `baseline` gives the results; every
        other run is a tuning trial, compared with the baseline.

wrk's figures are read from the one line `BENCH_JSON {...}` that bench/files/bench.lua
prints when wrk is done; wrk's text output is kept beside them for people.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASELINE = "baseline"
RESULT_LINE = re.compile(r"^BENCH_JSON (\{.*\})\s*$", re.MULTILINE)
LAB_PREFIX = os.environ.get("LAB_NAME", "webstack-lab") + "-"


# --- The machine --------------------------------------------------------------------------


def read_first(path: str, pattern: str) -> str:
    """The first group of `pattern` in the file at `path`, or "" if absent or unreadable."""
    try:
        found = re.search(pattern, Path(path).read_text(), re.MULTILINE)
    except OSError:
        return ""
    return found.group(1).strip() if found else ""


def command_output(*args: str) -> str:
    """What a command prints, or "" when it cannot run or fails."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def describe_machine() -> dict[str, Any]:
    """This computer as the bench saw it: hardware, kernel, load, containers running."""
    mem_kib = read_first("/proc/meminfo", r"^MemTotal:\s+(\d+)") or "0"
    containers = command_output("docker", "ps", "--format", "{{.Names}}").split()
    return {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": read_first("/proc/cpuinfo", r"^model name\s*:\s*(.+)$") or platform.processor(),
        "cores": os.cpu_count() or 0,
        "ram_gib": round(int(mem_kib) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": read_first("/etc/os-release", r'^PRETTY_NAME="?([^"\n]*)"?'),
        "virtualization": command_output("systemd-detect-virt") or "unknown",
        "docker": command_output("docker", "version", "--format", "{{.Server.Version}}"),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "lab_containers": sorted(c for c in containers if c.startswith(LAB_PREFIX)),
        "other_containers": sorted(c for c in containers if not c.startswith(LAB_PREFIX)),
    }


# --- Samples of the lab machines -----------------------------------------------------------

# In these machines report.py sample also reads the nginx and gunicorn processes.
INSIDE = ("lb", "app")
TIERS = {"lb": "balancers", "app": "app machines", "redis": "Redis", "client": "load generator"}
TCP_COUNTERS = (
    "Tcp.ActiveOpens", "Tcp.PassiveOpens", "Tcp.AttemptFails", "Tcp.EstabResets",
    "Tcp.CurrEstab", "Tcp.RetransSegs", "TcpExt.ListenOverflows", "TcpExt.ListenDrops",
    "TcpExt.TCPTimeouts", "TcpExt.TCPAbortOnMemory", "TcpExt.TCPReqQFullDrop",
    "TcpExt.SyncookiesSent", "TcpExt.TW",
)  # fmt: skip


def tier_of(machine: str) -> str:
    """lb1 -> lb, app2 -> app, redis3 -> redis, client1 -> client, monitor1 -> monitor."""
    return machine.rstrip("0123456789")


def lab_containers() -> dict[str, str]:
    """Lab machine name -> full container id, of the running lab containers."""
    listed = command_output("docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}")
    found = {}
    for line in listed.splitlines():
        cid, _, name = line.partition(" ")
        if name.startswith(LAB_PREFIX):
            found[name.removeprefix(LAB_PREFIX)] = cid
    return found


def cgroup_dir(controller: str, cid: str) -> Path:
    """A container's cgroup: v1 (CONTROLLER/docker/ID) or v2 (system.slice/docker-ID.scope)."""
    v1 = Path(f"/sys/fs/cgroup/{controller}/docker/{cid}")
    return v1 if v1.exists() else Path(f"/sys/fs/cgroup/system.slice/docker-{cid}.scope")


def cgroup_figures(cid: str) -> dict[str, int]:
    """CPU time (ns) and memory (bytes) of a container from its cgroup."""
    v1_cpu = cgroup_dir("cpuacct", cid) / "cpuacct.usage"
    if v1_cpu.exists():
        memory = cgroup_dir("memory", cid) / "memory.usage_in_bytes"
        return {"cpu_ns": int(v1_cpu.read_text()), "mem_bytes": int(memory.read_text())}
    v2 = cgroup_dir("unified", cid)
    usec = read_first(str(v2 / "cpu.stat"), r"^usage_usec (\d+)") or "0"
    memory = read_first(str(v2 / "memory.current"), r"^(\d+)") or "0"
    return {"cpu_ns": int(usec) * 1000, "mem_bytes": int(memory)}


def tcp_counters(pid: int) -> dict[str, int]:
    """The kernel's TCP counters of the network namespace of process `pid` (its
    /proc/PID/net/snmp and netstat: `Name: fields` / `Name: values` line pairs)."""
    found: dict[str, int] = {}
    for table in ("snmp", "netstat"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()
        except OSError:
            continue
        for head, values in zip(rows[::2], rows[1::2], strict=False):
            prefix, names = head.split(":", 1)
            numbers = values.split(":", 1)[1].split()
            for name, value in zip(names.split(), numbers, strict=False):
                if f"{prefix}.{name}" in TCP_COUNTERS:
                    found[f"{prefix}.{name}"] = int(value)
    return found


def processes_of(cid: str) -> tuple[list[dict[str, Any]], int]:
    """The nginx and gunicorn processes of a container, each with its resident memory and
    open sockets, read from the host's /proc (root there may read every process's fds, which
    root inside the container, without CAP_SYS_PTRACE, may not); and one pid of it."""
    pids = []  # systemd in the container makes cgroups of its own below the container's
    for procs in sorted(cgroup_dir("memory", cid).rglob("cgroup.procs")):
        pids += [int(p) for p in read_first(str(procs), r"([\s\S]*)").split()]
    found = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            if not (cmd.startswith("nginx") or "gunicorn" in cmd):
                continue
            status = Path(f"/proc/{pid}/status").read_text()
            fds = Path(f"/proc/{pid}/fd")
            sockets = sum(os.readlink(fd).startswith("socket:") for fd in fds.iterdir())
        except (OSError, UnicodeDecodeError):  # gone meanwhile
            continue
        rss = re.search(r"^VmRSS:\s+(\d+)", status, re.MULTILINE)
        found.append({
            "pid": pid,
            "cmd": cmd[:80],
            "rss_kib": int(rss.group(1)) if rss else 0,
            "sockets": sockets,
        })  # fmt: skip
    return found, (pids[0] if pids else 0)


def sample() -> dict[str, Any]:
    """The lab machines now, all read from the host (nothing runs inside the machines, so the
    reading costs them no CPU): cgroup CPU time and memory of every machine, and in the
    balancers and app machines the nginx/gunicorn processes and the TCP counters."""
    containers = lab_containers()
    figures: dict[str, Any] = {
        "time": datetime.now(UTC).timestamp(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cgroups": {name: cgroup_figures(cid) for name, cid in containers.items()},
        "inside": {},
    }
    for name, cid in sorted(containers.items()):
        if tier_of(name) in INSIDE:
            processes, pid = processes_of(cid)
            figures["inside"][name] = {"processes": processes, "tcp": tcp_counters(pid)}
    return figures


# --- One run's results --------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What the wrk processes of one case run measured together. Latencies in milliseconds:
    p50 is the median of the processes' p50, p99 and max the worst of theirs."""

    seconds: float
    requests: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    ok_rps: float
    rps: float

    @classmethod
    def from_wrk(cls, parts: list[dict[str, Any]]) -> Figures:
        errors: dict[str, int] = {}
        for part in parts:
            for name, count in part["errors"].items():
                errors[name] = errors.get(name, 0) + int(count)
        rps = sum(p["requests"] / (p["duration_us"] / 1e6) for p in parts if p["duration_us"])
        bad = sum(
            p["errors"]["status"] / (p["duration_us"] / 1e6) for p in parts if p["duration_us"]
        )
        answered = [p for p in parts if p["requests"]]
        return cls(
            seconds=max(p["duration_us"] for p in parts) / 1e6,
            requests=sum(int(p["requests"]) for p in parts),
            errors=errors,
            p50_ms=median([p["latency_us"]["p50"] / 1000 for p in answered]) if answered else 0,
            p99_ms=max((p["latency_us"]["p99"] / 1000 for p in answered), default=0),
            max_ms=max((p["latency_us"]["max"] / 1000 for p in answered), default=0),
            ok_rps=rps - bad,
            rps=rps,
        )

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return 0.0
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def parse_wrk(stdout: str) -> list[dict[str, Any]] | None:
    """The figures of every BENCH_JSON line (one per wrk process), or None if one is missing."""
    parts = []
    generators = max(1, stdout.count("--- generator "))
    for found in RESULT_LINE.findall(stdout):
        try:
            data = json.loads(found)
        except ValueError:
            continue
        needed = {"duration_us", "requests", "errors", "latency_us"}
        if isinstance(data, dict) and needed <= data.keys():
            parts.append(data)
    return parts if parts and len(parts) == generators else None


def read_steps(path: Path) -> list[dict[str, Any]]:
    steps = []
    if path.exists():
        for line in path.read_text().splitlines():
            name, seconds, status = line.split("\t")
            steps.append({"step": name, "seconds": int(seconds), "status": status})
    return steps


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tcp_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per machine, how much each kernel TCP counter moved during the case (CurrEstab: after)."""
    moved = {}
    for name, inside in (after.get("inside") or {}).items():
        first = ((before.get("inside") or {}).get(name) or {}).get("tcp", {})
        if not inside or not first:
            continue
        moved[name] = {
            key: value if key == "Tcp.CurrEstab" else value - first.get(key, 0)
            for key, value in inside["tcp"].items()
        }
    return moved


def held_figures(before: dict[str, Any], held: dict[str, Any]) -> dict[str, Any]:
    """With the connections open: per machine its cgroup memory growth and, per nginx or
    gunicorn process, its sockets and resident memory (growth over the sample before)."""
    found: dict[str, Any] = {}
    for name, inside in (held.get("inside") or {}).items():
        first = (before.get("inside") or {}).get(name) or {}
        if not inside:
            continue
        rss_before = {p["pid"]: p["rss_kib"] for p in first.get("processes", [])}
        workers = [
            {
                "cmd": p["cmd"],
                "sockets": p["sockets"],
                "rss_kib": p["rss_kib"],
                "rss_growth_kib": p["rss_kib"] - rss_before.get(p["pid"], p["rss_kib"]),
            }
            for p in inside["processes"]
            if "master" not in p["cmd"]  # nginx workers and every gunicorn process
        ]
        found[name] = {
            "cgroup_growth_bytes": held["cgroups"][name]["mem_bytes"]
            - before["cgroups"][name]["mem_bytes"],
            "established": inside["tcp"].get("Tcp.CurrEstab", 0),
            "workers": workers,
        }
    return found


def collect_run(run_dir: Path, label: str) -> dict[str, Any]:
    """A run's raw files (bench/run.sh, bench/measure.yml, report.py sample) as one document:
    every case run with its wrk figures, its CPU time per machine (cgroup after - before),
    its TCP counters and, where sampled, what the machines held with the connections open."""
    cases = []
    for path in sorted(run_dir.glob("*-r[0-9]*.json")):
        if path.stem.endswith(("-before", "-after", "-held")):
            continue
        raw = read_json(path)
        if not isinstance(raw, dict) or "case" not in raw:
            continue
        before = read_json(path.with_name(path.stem + "-before.json")) or {}
        after = read_json(path.with_name(path.stem + "-after.json")) or {}
        held = read_json(path.with_name(path.stem + "-held.json"))
        cpu_ns = {
            name: after["cgroups"][name]["cpu_ns"] - figures["cpu_ns"]
            for name, figures in before.get("cgroups", {}).items()
            if name in after.get("cgroups", {})
        }
        cases.append(
            {
                **raw,
                "wrk": parse_wrk(raw.get("stdout", "")),
                "seconds": after.get("time", 0) - before.get("time", 0),
                "cpu_ns": cpu_ns,
                "loadavg": [before.get("loadavg"), after.get("loadavg")],
                "tcp": tcp_delta(before, after),
                "held": held_figures(before, held) if held else None,
            }
        )
    cases.sort(key=lambda case: (case["run"], str(case.get("start", ""))))
    vip_moves = {
        path.stem.removeprefix("vip-"): int(path.read_text().strip() or 0)
        for path in sorted(run_dir.glob("vip-*.txt"))
    }
    settings = {
        path.stem.removeprefix("settings-"): path.read_text().strip()
        for path in sorted(run_dir.glob("settings-*.txt"))
    }
    bench_vars = run_dir / "vars.json"

    def machine(name: str) -> dict[str, Any]:
        path = run_dir / f"machine-{name}.json"
        return json.loads(path.read_text()) if path.exists() else {}

    for case in cases:
        case.pop("stdout", None)  # kept in the raw results; the figures are parsed
    return {
        "label": label,
        "vars": json.loads(bench_vars.read_text()) if bench_vars.exists() else {},
        "phases": (run_dir / "phases.txt").read_text().split()
        if (run_dir / "phases.txt").exists()
        else [],
        "only": [n for n in read_first(str(run_dir / "only.txt"), r"^(.*)$").split(",") if n],
        "machine_start": machine("start"),
        "machine_end": machine("end"),
        "steps": read_steps(run_dir / "steps.tsv"),
        "settings": settings,
        "vip_moves": vip_moves,
        "cases": cases,
    }


# --- Figures over the runs of a case ----------------------------------------------------------


def runs_of(run: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in run["cases"] if c["case"]["name"] == name]


def case_names(run: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for case in run["cases"]:
        if case["case"]["name"] not in names:
            names.append(case["case"]["name"])
    return names


def figures_of(case: dict[str, Any]) -> Figures | None:
    return Figures.from_wrk(case["wrk"]) if case.get("wrk") else None


def idle_rate(run: dict[str, Any], phase: str) -> dict[str, float]:
    """CPU ns per second of each machine at rest (the `idle` case of the phase, its median
    over the runs): the background subtracted from every case's CPU time."""
    rates: dict[str, list[float]] = {}
    for case in run["cases"]:
        if case["case"]["source"] == "none" and case["case"]["phase"] == phase and case["seconds"]:
            for name, ns in case["cpu_ns"].items():
                rates.setdefault(name, []).append(ns / case["seconds"])
    return {name: median(values) for name, values in rates.items()}


def cpu_us_per_request(run: dict[str, Any], case: dict[str, Any]) -> dict[str, float | None]:
    """CPU microseconds per answered request, per tier: the tier's cgroup CPU time over the
    case, less its machines' rest rate for the case's wall time, over the requests answered."""
    figures = figures_of(case)
    if not figures or not figures.requests:
        return {}
    rest = idle_rate(run, case["case"]["phase"])
    per_tier: dict[str, float] = {}
    for name, ns in case["cpu_ns"].items():
        used = max(0.0, ns - rest.get(name, 0.0) * case["seconds"])
        per_tier[tier_of(name)] = per_tier.get(tier_of(name), 0.0) + used
    return {tier: ns / 1000 / figures.requests for tier, ns in per_tier.items()}


@dataclass(frozen=True)
class Spread:
    values: list[float]

    @property
    def mid(self) -> float:
        return median(self.values) if self.values else 0.0

    def show(self, fmt: Any = None) -> str:
        fmt = fmt or fmt_rate
        if not self.values:
            return "-"
        if len(self.values) == 1:
            return fmt(self.values[0])
        return f"{fmt(self.mid)} ({fmt(min(self.values))}-{fmt(max(self.values))})"


def spread(run: dict[str, Any], name: str, value: Any) -> Spread:
    found = []
    for case in runs_of(run, name):
        figures = figures_of(case)
        got = value(case, figures) if figures else None
        if got is not None:
            found.append(float(got))
    return Spread(found)


# --- Rendering ------------------------------------------------------------------------------


def command_of(run: dict[str, Any]) -> str:
    label = run["label"]
    vars_json = json.dumps(run["vars"]) if run["vars"] else ""
    prefix = f"BENCH_VARS='{vars_json}' " if vars_json else ""
    phases = run.get("phases") or []
    if phases and phases != ["gevent", "sync"]:
        prefix += f"BENCH_PHASES='{' '.join(phases)}' "
    if run.get("only"):
        prefix += f"BENCH_ONLY={','.join(run['only'])} "
    return f"{prefix}./stack bench{'' if label == BASELINE else ' ' + label}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def fmt_us(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def fmt_kib(value: float) -> str:
    return f"{value:,.1f}"


SOURCE_NAMES = {
    "client": "client1 -> VIP (nginx, HTTPS)",
    "direct": "lb1 -> app1:8000 (HTTP)",
    "none": "no load",
}


def arrival(spec: dict[str, Any]) -> str:
    if spec["source"] == "none":
        return "-"
    generators = spec.get("generators", 1)
    if spec.get("ramp"):
        return f"ramp {spec['ramp']} s ({generators} wrk)"
    return "all at once"


def tier_costs(run: dict[str, Any], name: str) -> dict[str, Spread]:
    found: dict[str, list[float]] = {}
    for case in runs_of(run, name):
        for tier, value in cpu_us_per_request(run, case).items():
            found.setdefault(tier, []).append(value)
    return {tier: Spread(values) for tier, values in found.items()}


def results_table(run: dict[str, Any]) -> list[str]:
    lines = [
        "| case | path | from | arrival | connections | runs | ok/s | p99 ms | socket errors "
        "| status >= 400 | CPU us/req: balancers | app | Redis | load generator |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: |",
    ]
    for name in case_names(run):
        cases = runs_of(run, name)
        spec = cases[0]["case"]
        if spec["source"] == "none":
            continue
        measured = [f for f in map(figures_of, cases) if f]
        costs = tier_costs(run, name)
        direct = spec["source"] == "direct"
        lines.append(
            f"| {name} | `{spec['path']}` | {SOURCE_NAMES[spec['source']]} | {arrival(spec)} "
            f"| {spec['connections']:,} | {len(measured)} of {len(cases)} "
            f"| {spread(run, name, lambda c, f: f.ok_rps).show()} "
            f"| {spread(run, name, lambda c, f: f.p99_ms if f.requests else None).show(fmt_ms)} "
            f"| {', '.join(fmt_rate(f.socket_errors) for f in measured) or '-'} "
            f"| {', '.join(fmt_rate(f.errors.get('status', 0)) for f in measured) or '-'} "
            # lb1 sends the direct cases: its CPU there is the load generator's.
            f"| {'(sends the load)' if direct else costs.get('lb', Spread([])).show(fmt_us)} "
            f"| {costs.get('app', Spread([])).show(fmt_us)} "
            f"| {costs.get('redis', Spread([])).show(fmt_us)} "
            f"| {costs.get('lb' if direct else 'client', Spread([])).show(fmt_us)} |"
        )
    return lines


def held_table(run: dict[str, Any]) -> list[str]:
    """Cases sampled with their connections open: memory per connection, sockets per worker."""
    lines = [
        "| case | run | machine | established TCP | memory growth (cgroup) | per connection "
        "| busiest worker: sockets | its RSS | its RSS growth per socket |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in run["cases"]:
        held = case.get("held")
        if not held:
            continue
        for machine, figures in sorted(held.items()):
            workers = figures["workers"]
            busiest = max(workers, key=lambda w: w["sockets"], default=None)
            established = figures["established"]
            growth = figures["cgroup_growth_bytes"] / 1024
            per = f"{growth / established:,.1f} KiB" if established else "-"
            if busiest and busiest["sockets"]:
                worker = (
                    f"{busiest['sockets']:,} | {busiest['rss_kib'] / 1024:,.1f} MiB "
                    f"| {busiest['rss_growth_kib'] / busiest['sockets']:,.1f} KiB"
                )
            else:
                worker = "- | - | -"
            lines.append(
                f"| {case['case']['name']} | {case['run']} | {machine} | {established:,} "
                f"| {growth / 1024:,.1f} MiB | {per} | {worker} |"
            )
    return lines


def tcp_table(run: dict[str, Any]) -> list[str]:
    """The kernel's view of each case: new connections and queue overflows per machine."""
    keys = [
        ("Tcp.PassiveOpens", "accepted"),
        ("Tcp.ActiveOpens", "opened"),
        ("TcpExt.ListenOverflows", "accept queue overflows"),
        ("TcpExt.ListenDrops", "SYNs dropped"),
        ("Tcp.EstabResets", "resets"),
    ]
    lines = [
        "| case | machine | " + " | ".join(label for _, label in keys) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for name in case_names(run):
        cases = [c for c in runs_of(run, name) if c["case"]["source"] != "none"]
        machines = sorted({m for c in cases for m in c["tcp"]})
        for machine in machines:
            cells = []
            for key, _ in keys:
                values = [c["tcp"][machine].get(key, 0) for c in cases if machine in c["tcp"]]
                cells.append(Spread(values).show())
            lines.append(f"| {name} | {machine} | " + " | ".join(cells) + " |")
    return lines


def proxy_lines(run: dict[str, Any]) -> list[str]:
    """What nginx and TLS cost per request: the balancers' CPU per request of /hello through
    the VIP, and the app machines' CPU per request with and without the proxy in front."""
    through, direct = tier_costs(run, "hello"), tier_costs(run, "hello-direct")
    if not through or not direct:
        return []
    rps_via = spread(run, "hello", lambda c, f: f.ok_rps)
    rps_direct = spread(run, "hello-direct", lambda c, f: f.ok_rps)
    ratio = rps_via.mid / rps_direct.mid if rps_direct.mid else 0
    return [
        f"- **Proxy overhead** (`/hello`, {runs_of(run, 'hello')[0]['case']['connections']} "
        f"connections, {len(rps_via.values)} runs each): "
        f"nginx and TLS cost the balancers {through.get('lb', Spread([])).show(fmt_us)} CPU "
        f"microseconds per request (median, min-max). The app machines spend "
        f"{through.get('app', Spread([])).show(fmt_us)} us per request behind nginx and "
        f"{direct.get('app', Spread([])).show(fmt_us)} us when lb1 sends straight to app1. "
        f"Throughput: {rps_via.show()} ok/s through the VIP, {rps_direct.show()} direct "
        f"({ratio:.2f}x, medians; throughput moves with the machine's load, CPU per request "
        "much less).",
    ]


def load_lines(run: dict[str, Any]) -> list[str]:
    loads = [float(la[0]) for c in run["cases"] for la in c["loadavg"] if la]
    if not loads:
        return []
    return [
        f"- Load of the computer during the cases (1-minute load average at each case's start "
        f"and end, {run['machine_start'].get('cores', '?')} cores): {min(loads):.1f} to "
        f"{max(loads):.1f}, median {median(loads):.1f}."
    ]


def machine_lines(run: dict[str, Any]) -> list[str]:
    start, end = run["machine_start"], run["machine_end"]
    if not start:
        return ["(no machine description was recorded)"]
    others = start.get("other_containers", [])
    load_note = (
        f"load average {' '.join(start['loadavg'])} at the start, "
        f"{' '.join(end.get('loadavg', ['?']))} at the end; "
        f"{len(others)} other containers running at the start "
        f"({', '.join(others) if others else 'none'})"
    )
    return [
        f"- CPU: {start['cpu']}, {start['cores']} cores ({start['virtualization']} guest); "
        f"RAM {start['ram_gib']} GiB",
        f"- Kernel {start['kernel']}, {start['os']}, Docker {start['docker']}",
        f"- The lab: {len(start['lab_containers'])} systemd containers on one docker bridge, "
        "every one sharing the same cores: wrk, nginx, gunicorn and Redis compete for the CPU",
        f"- Load from other work: {load_note}",
        f"- Run started {start['time']}",
    ]


def settings_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    moves = run.get("vip_moves", {})
    if moves:
        counted = ", ".join(f"{name} {count}" for name, count in sorted(moves.items()))
        total = sum(moves.values())
        lines.append(
            f"- Times a balancer took the VIP during a phase (keepalived's journal): {counted}; "
            + ("the VIP stayed put." if total == 0 else f"{total} moves in all.")
        )
    for name, text in sorted(run["settings"].items()):
        flat = "; ".join(line.rstrip(";") for line in text.splitlines())
        lines.append(f"- `{name}`: {flat}")
    return lines


def steps_lines(run: dict[str, Any]) -> list[str]:
    lines = ["| step | seconds | status |", "| --- | ---: | --- |"]
    lines += [f"| {s['step']} | {s['seconds']} | {s['status']} |" for s in run["steps"]]
    return lines


def verdicts(run: dict[str, Any]) -> list[str]:
    """One line per 10,000-connection case: did every connection get through?"""
    lines = []
    for name in case_names(run):
        cases = runs_of(run, name)
        spec = cases[0]["case"]
        if spec.get("connections", 0) < 10000:
            continue
        measured = [f for f in map(figures_of, cases) if f]
        errors = [f.socket_errors for f in measured]
        clean = sum(1 for e in errors if e == 0)
        lines.append(
            f"- `{name}` ({SOURCE_NAMES[spec['source']]}, {arrival(spec)}): "
            f"{clean} of {len(cases)} runs with 0 socket errors"
            + (
                f" (socket errors per run: {', '.join(fmt_rate(e) for e in errors)})"
                if errors
                else ""
            )
            + f"; {spread(run, name, lambda c, f: f.ok_rps).show()} ok answers/s."
        )
    return lines


def render_results(run: dict[str, Any], plots: list[str]) -> list[str]:
    runs = max((c["run"] for c in run["cases"]), default=0)
    return [
        f"Run `{run['label']}`, measured with `{command_of(run)}`: {runs} runs of every case, "
        "interleaved (run 1 of every case, then run 2, ...). Figures are the median over the "
        "runs, with (min-max); errors are listed per run.",
        "",
        *results_table(run),
        "",
        "ok/s: answers with a status below 400 per second, summed over the wrk processes of a "
        "case. p99: the worst p99 of those processes. socket errors: wrk's connect, read, write "
        "and timeout errors. CPU us/req: CPU microseconds per answered request, from each "
        "container's cgroup CPU time read before and after the case, less the machines' CPU at "
        "rest (the `idle` case) for the same time, summed over the tier's machines.",
        "",
        *verdicts(run),
        *proxy_lines(run),
        *load_lines(run),
        "",
        *[f"![{Path(p).stem}]({p})" for p in plots],
        "",
        "With the connections open (sampled `held_at` seconds into the case):",
        "",
        *held_table(run),
        "",
        "The kernel's TCP counters over each case (median, min-max over the runs):",
        "",
        *tcp_table(run),
        "",
        "The machine:",
        "",
        *machine_lines(run),
        "",
        "What served the load, read from the machines in each phase:",
        "",
        *settings_lines(run),
        "",
        "How long each step took:",
        "",
        *steps_lines(run),
    ]


def load_of(run: dict[str, Any]) -> str:
    start, end = run["machine_start"], run["machine_end"]
    if not start:
        return "no machine description"
    return (
        f"started {start['time']}, load average {' '.join(start['loadavg'])} at the start, "
        f"{' '.join(end.get('loadavg', ['?']))} at the end"
    )


def render_tuning(baseline: dict[str, Any] | None, trials: list[dict[str, Any]]) -> list[str]:
    if baseline is None or not trials:
        return ["No tuning trial kept yet (`BENCH_VARS='{...}' ./stack bench LABEL`)."]
    lines: list[str] = []
    for trial in trials:
        lines += [
            f"Trial `{trial['label']}`: `{command_of(trial)}` against `{command_of(baseline)}`"
            " (medians over the runs of each).",
            "",
            f"- baseline: {load_of(baseline)}",
            f"- trial: {load_of(trial)}",
            "",
            "| case | ok/s baseline | ok/s trial | socket errors baseline | trial "
            "| balancers us/req baseline | trial | app us/req baseline | trial |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name in case_names(baseline):
            if not runs_of(trial, name) or runs_of(baseline, name)[0]["case"]["source"] == "none":
                continue
            cells = []
            for run in (baseline, trial):
                cells.append(spread(run, name, lambda c, f: f.ok_rps).show())
            for run in (baseline, trial):
                measured = [f for f in map(figures_of, runs_of(run, name)) if f]
                cells.append(", ".join(fmt_rate(f.socket_errors) for f in measured) or "-")
            for tier in ("lb", "app"):
                for run in (baseline, trial):
                    cells.append(tier_costs(run, name).get(tier, Spread([])).show(fmt_us))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines[:-1]


def replace_block(text: str, name: str, body: list[str]) -> str:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"report.py: README.md has no {begin} ... {end} block")
    block = "\n".join([begin, *body, end])
    return pattern.sub(lambda _: block, text, count=1)


# --- Plots ------------------------------------------------------------------------------------


def draw_plots(runs: list[dict[str, Any]], docs: Path) -> list[str]:
    """Per case: ok answers/s, and CPU microseconds per request per tier, each a bar at the
    median with the min-max over the runs. One group of bars per kept run (label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Cases as the first run defines them; a run without one of them shows no bar there.
    sources = {n: runs_of(runs[0], n)[0]["case"]["source"] for n in case_names(runs[0])}
    names = [n for n, source in sources.items() if source != "none"]
    written = []
    width = 0.8 / max(1, len(runs))

    def bars(ax: Any, offset: float, spreads: list[Spread], label: str, colour: str) -> None:
        xs = [i + offset for i in range(len(spreads))]
        mids = [s.mid for s in spreads]
        low = [s.mid - min(s.values, default=0) for s in spreads]
        high = [max(s.values, default=0) - s.mid for s in spreads]
        ax.bar(xs, mids, width, yerr=[low, high], capsize=3, label=label, color=colour)

    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=110)
    for k, run in enumerate(runs):
        spreads = [spread(run, n, lambda c, f: f.ok_rps) for n in names]
        bars(ax, k * width, spreads, run["label"], f"C{k}")
    ax.set_xticks(
        [i + width * (len(runs) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right"
    )
    ax.set_ylabel("ok answers per second")
    ax.set_title("Throughput per case (median, bars: min-max over the runs)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(docs / "throughput.png")
    plt.close(fig)
    written.append("throughput.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, tier in zip(axes, ("lb", "app"), strict=True):
        for k, run in enumerate(runs):
            spreads = [tier_costs(run, n).get(tier, Spread([0.0])) for n in names]
            if tier == "lb":  # lb1 sends the direct cases: no balancer cost there
                spreads = [
                    Spread([0.0]) if sources[n] == "direct" else s
                    for n, s in zip(names, spreads, strict=True)
                ]
            bars(ax, k * width, spreads, run["label"], f"C{k}")
        ax.set_xticks(
            [i + width * (len(runs) - 1) / 2 for i in range(len(names))],
            names,
            rotation=30,
            ha="right",
            fontsize=8,
        )
        ax.set_yscale("log")
        ax.set_ylabel("CPU microseconds per request (log)")
        ax.set_title(f"{TIERS[tier]}: CPU per request")
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "cost.png")
    plt.close(fig)
    written.append("cost.png")
    return written


# --- Commands -------------------------------------------------------------------------------


def build(run_dir: Path, label: str, docs: Path) -> int:
    run = collect_run(run_dir, label)
    runs_dir = docs / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / f"{label}.json").write_text(json.dumps(run, indent=2) + "\n")

    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    # The reference: the run labelled baseline, else the kept run with the most cases.
    baseline = next((r for r in runs if r["label"] == BASELINE), None) or max(
        runs, key=lambda r: len(r["cases"]), default=None
    )
    trials = [r for r in runs if r is not baseline]
    shown = baseline or run
    plots = draw_plots([shown, *trials], docs)

    readme = docs / "README.md"
    text = readme.read_text()
    text = replace_block(text, "results", render_results(shown, plots))
    text = replace_block(text, "tuning", render_tuning(baseline, trials))
    readme.write_text(text)

    missing = [
        f"{c['case']['name']} run {c['run']}"
        for c in run["cases"]
        if not c.get("wrk") and c["case"]["source"] != "none"
    ]
    print("\n".join(results_table(run)))
    print("\n".join([*verdicts(run), *proxy_lines(run), *load_lines(run)]))
    if missing:
        print(f"report.py: no figures for {', '.join(missing)} (see {run_dir})", file=sys.stderr)
        return 1
    if not run["cases"]:
        print(f"report.py: no case results in {run_dir}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    machine = commands.add_parser("machine", help="describe this computer as JSON")
    machine.add_argument("--out", type=Path, required=True)
    sampled = commands.add_parser("sample", help="the lab machines' CPU, memory, sockets now")
    sampled.add_argument("--out", type=Path, required=True)
    built = commands.add_parser("build", help="keep a run, redraw docs/benchmarks")
    built.add_argument("--run", type=Path, required=True, help="raw results of bench/run.sh")
    built.add_argument("--label", required=True)
    built.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    if args.command == "machine":
        args.out.write_text(json.dumps(describe_machine(), indent=2) + "\n")
        return 0
    if args.command == "sample":
        args.out.write_text(json.dumps(sample()) + "\n")
        return 0
    return build(args.run, args.label, args.docs)


if __name__ == "__main__":
    sys.exit(main())
