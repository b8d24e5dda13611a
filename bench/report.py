"""The bench's report: machine descriptions, and the tables and plots of docs/benchmarks/.

    report.py machine --out FILE
        Describes this computer now (CPU, cores, RAM, kernel, load, running containers) as
        JSON; bench/run.sh calls it at the start and at the end of a run.
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
SOURCES = {
    "client": "client1 -> VIP (nginx, HTTPS)",
    "direct": "lb1 -> app1:8000 (no nginx, HTTP)",
}


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


# --- One run's results --------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """What wrk measured in one case. Latencies in milliseconds."""

    seconds: float
    requests: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_wrk(cls, data: dict[str, Any]) -> Figures:
        latency = data["latency_us"]
        return cls(
            seconds=data["duration_us"] / 1e6,
            requests=int(data["requests"]),
            errors={name: int(count) for name, count in data["errors"].items()},
            p50_ms=latency["p50"] / 1000,
            p90_ms=latency["p90"] / 1000,
            p99_ms=latency["p99"] / 1000,
            max_ms=latency["max"] / 1000,
        )

    @property
    def rps(self) -> float:
        """Answers per second, whatever their status."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok_rps(self) -> float:
        """Answers per second with a status below 400 (wrk counts the others as errors)."""
        good = self.requests - self.errors.get("status", 0)
        return good / self.seconds if self.seconds else 0.0


def parse_wrk(stdout: str) -> dict[str, Any] | None:
    """The figures of bench.lua's last BENCH_JSON line, or None if there is none."""
    found = RESULT_LINE.findall(stdout)
    if not found:
        return None
    try:
        data = json.loads(found[-1])
    except ValueError:
        return None
    needed = {"duration_us", "requests", "errors", "latency_us"}
    return data if isinstance(data, dict) and needed <= data.keys() else None


def read_steps(path: Path) -> list[dict[str, Any]]:
    steps = []
    if path.exists():
        for line in path.read_text().splitlines():
            name, seconds, status = line.split("\t")
            steps.append({"step": name, "seconds": int(seconds), "status": status})
    return steps


def collect_run(run_dir: Path, label: str) -> dict[str, Any]:
    """A run's raw files (bench/run.sh, bench/measure.yml) as one JSON document."""
    cases = []
    for path in run_dir.glob("*.json"):
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or "case" not in raw:
            continue
        wrk = parse_wrk(raw.get("stdout", ""))
        cases.append({**raw, "wrk": wrk})
    cases.sort(key=lambda case: str(case.get("start", "")))
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

    return {
        "label": label,
        "vars": json.loads(bench_vars.read_text()) if bench_vars.exists() else {},
        "machine_start": machine("start"),
        "machine_end": machine("end"),
        "steps": read_steps(run_dir / "steps.tsv"),
        "settings": settings,
        "vip_moves": vip_moves,
        "cases": cases,
    }


# --- Rendering ------------------------------------------------------------------------------


def command_of(run: dict[str, Any]) -> str:
    label = run["label"]
    vars_json = json.dumps(run["vars"]) if run["vars"] else ""
    prefix = f"BENCH_VARS='{vars_json}' " if vars_json else ""
    return f"{prefix}./stack bench{'' if label == BASELINE else ' ' + label}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def fmt_ms(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def fmt_latency(figures: Figures, value: float) -> str:
    """A latency, or a dash when no request was answered (wrk then reports zeros)."""
    return fmt_ms(value) if figures.requests else "-"


def fmt_errors(figures: Figures) -> str:
    names = {"status": "status>=400", "timeout": "timeout"}
    parts = [f"{names.get(k, k)} {v:,}" for k, v in figures.errors.items() if v]
    return ", ".join(parts) if parts else "0"


def figures_of(case: dict[str, Any]) -> Figures | None:
    return Figures.from_wrk(case["wrk"]) if case.get("wrk") else None


def case_by_name(run: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in run["cases"] if c["case"]["name"] == name), None)


def results_table(run: dict[str, Any]) -> list[str]:
    lines = [
        "| case | path | from | worker class | connections | requests/s | ok/s "
        "| p50 ms | p99 ms | errors |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for case in run["cases"]:
        spec = case["case"]
        figures = figures_of(case)
        head = (
            f"| {spec['name']} | `{spec['path']}` | {SOURCES[spec['source']]} | {spec['phase']} "
            f"| {spec['connections']:,} "
        )
        if figures is None:
            lines.append(head + f"| no figures (wrk exit {case['rc']}) | | | | |")
            continue
        lines.append(
            head + f"| {fmt_rate(figures.rps)} | {fmt_rate(figures.ok_rps)} "
            f"| {fmt_latency(figures, figures.p50_ms)} | {fmt_latency(figures, figures.p99_ms)} "
            f"| {fmt_errors(figures)} |"
        )
    return lines


def comparisons(run: dict[str, Any]) -> list[str]:
    """The ratios the bench is for: the proxy's cost, gevent against sync."""
    lines = []
    hello, direct = case_by_name(run, "hello"), case_by_name(run, "hello-direct")
    through = figures_of(hello) if hello else None
    straight = figures_of(direct) if direct else None
    if hello and through and straight and straight.rps:
        lines.append(
            f"- **Proxy overhead** (`/hello`, {hello['case']['connections']} connections): "
            f"{fmt_rate(through.rps)} requests/s through nginx and TLS against "
            f"{fmt_rate(straight.rps)} straight to app1 ({through.rps / straight.rps:.2f}x); "
            f"p50 {fmt_ms(through.p50_ms)} ms against {fmt_ms(straight.p50_ms)} ms, "
            f"p99 {fmt_ms(through.p99_ms)} ms against {fmt_ms(straight.p99_ms)} ms."
        )
    for suffix, where in (("", "through the VIP"), ("-direct", "app-direct")):
        lines += worker_class_ratios(run, suffix, where)
    return lines


def worker_class_ratios(run: dict[str, Any], suffix: str, where: str) -> list[str]:
    lines = []
    for connections in sorted({c["case"]["connections"] for c in io_cases(run)}):
        by_series = {
            c["case"]["series"]: figures_of(c)
            for c in io_cases(run)
            if c["case"]["connections"] == connections
        }
        gevent, sync = by_series.get("gevent" + suffix), by_series.get("sync" + suffix)
        if gevent and sync:
            if sync.ok_rps:
                ratio = f"{gevent.ok_rps / sync.ok_rps:.1f}x"
            else:
                ratio = "sync answered none" if gevent.ok_rps else "neither answered"
            lines.append(
                f"- **gevent / sync** {where}, `/io?ms=100` at {connections:,} connections: "
                f"{fmt_rate(gevent.ok_rps)} against {fmt_rate(sync.ok_rps)} ok answers/s "
                f"({ratio}); p99 {fmt_latency(gevent, gevent.p99_ms)} ms against "
                f"{fmt_latency(sync, sync.p99_ms)} ms."
            )
    return lines


def io_cases(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in run["cases"] if c["case"].get("series") and c.get("wrk")]


def machine_lines(run: dict[str, Any]) -> list[str]:
    start, end = run["machine_start"], run["machine_end"]
    if not start:
        return ["(no machine description was recorded)"]
    others = start.get("other_containers", [])
    load_note = (
        f"load average {' '.join(start['loadavg'])} at the start, "
        f"{' '.join(end.get('loadavg', ['?']))} at the end; "
        f"{len(others)} other containers running at the start "
        f"({', '.join(others) if others else 'none'}): other engineers' molecule scenarios "
        "shared the same 2 cores during the run"
    )
    return [
        f"- CPU: {start['cpu']}, {start['cores']} cores ({start['virtualization']} guest); "
        f"RAM {start['ram_gib']} GiB",
        f"- Kernel {start['kernel']}, {start['os']}, Docker {start['docker']}",
        f"- The lab: {len(start['lab_containers'])} systemd containers on one docker bridge "
        "(2 balancers, 2 app machines, 3 Redis, client1), every one sharing the same cores: "
        "wrk, nginx, gunicorn and Redis compete for the CPU",
        f"- Load from other work: {load_note}",
        f"- Run started {start['time']}",
    ]


def settings_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    moves = run.get("vip_moves", {})
    if moves:
        counted = ", ".join(f"{name} {count}" for name, count in sorted(moves.items()))
        lines.append(
            "- Times a balancer took the VIP during a phase (keepalived's journal; 0 everywhere "
            f"= the VIP stayed put): {counted}"
        )
    for name, text in sorted(run["settings"].items()):
        flat = "; ".join(line.rstrip(";") for line in text.splitlines())
        lines.append(f"- `{name}`: {flat}")
    return lines


def steps_lines(run: dict[str, Any]) -> list[str]:
    lines = ["| step | seconds | status |", "| --- | ---: | --- |"]
    lines += [f"| {s['step']} | {s['seconds']} | {s['status']} |" for s in run["steps"]]
    return lines


def render_results(run: dict[str, Any], plots: list[str]) -> list[str]:
    measured = [f for f in map(figures_of, run["cases"]) if f is not None]
    duration = measured[0].seconds if measured else 0.0
    lines = [
        f"Run `{run['label']}`, measured with `{command_of(run)}` "
        f"(wrk, {duration:.0f} s per case, 2 threads, 10 s timeout).",
        "",
        *results_table(run),
        "",
        "requests/s counts every answer; ok/s only those with a status below 400. p50 and p99",
        "are wrk's latency percentiles over every answer (errors included), measured from the",
        "client; requests that timed out are in the errors, not in the percentiles.",
        "",
        *comparisons(run),
        "",
        *[f"![{Path(p).stem}]({p})" for p in plots],
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
    return lines


def load_of(run: dict[str, Any]) -> str:
    """When a run started and the computer's load around it (other work shares the cores)."""
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
            f"Trial `{trial['label']}`: `{command_of(trial)}` against `{command_of(baseline)}`.",
            "",
            f"- baseline: {load_of(baseline)}",
            f"- trial: {load_of(trial)}",
            "",
            "| case | connections | ok/s before | ok/s after | p99 ms before | p99 ms after "
            "| errors before | errors after |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for case in baseline["cases"]:
            name = case["case"]["name"]
            other = case_by_name(trial, name)
            before, after = figures_of(case), figures_of(other) if other else None
            if before is None or after is None:
                continue
            lines.append(
                f"| {name} | {case['case']['connections']:,} "
                f"| {fmt_rate(before.ok_rps)} | {fmt_rate(after.ok_rps)} "
                f"| {fmt_latency(before, before.p99_ms)} | {fmt_latency(after, after.p99_ms)} "
                f"| {fmt_errors(before)} | {fmt_errors(after)} |"
            )
        lines += ["", *proxy_ratios(baseline, trial), ""]
    return lines[:-1]


def proxy_ratios(baseline: dict[str, Any], trial: dict[str, Any]) -> list[str]:
    """Through the VIP / straight to app1, before and after. The direct cases do not pass
    nginx: their own change is the computer's load, which the ratio cancels out."""
    pairs = [
        ("hello", "hello-direct"),
        ("io-gevent-1000", "io-direct-gevent-1000"),
        ("io-gevent-5000", "io-direct-gevent-5000"),
    ]
    lines = []
    for through, direct in pairs:
        ratios = []
        for run in (baseline, trial):
            a, b = case_by_name(run, through), case_by_name(run, direct)
            fa, fb = (figures_of(a) if a else None), (figures_of(b) if b else None)
            ratios.append(f"{fa.ok_rps / fb.ok_rps:.2f}" if fa and fb and fb.ok_rps else "-")
        lines.append(
            f"- ok/s through the VIP / straight to app1, `{through}` / `{direct}`: "
            f"{ratios[0]} before, {ratios[1]} after"
        )
    return lines


def replace_block(text: str, name: str, body: list[str]) -> str:
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"report.py: README.md has no {begin} ... {end} block")
    block = "\n".join([begin, *body, end])
    return pattern.sub(lambda _: block, text, count=1)


# --- Plots ------------------------------------------------------------------------------------


def draw_plots(runs: list[dict[str, Any]], docs: Path) -> list[str]:
    """Throughput and p99 of `/io?ms=100` against connections, one line per worker class and
    way in (through the VIP, or lb1 straight to app1). Returns the PNG names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"gevent": "tab:blue", "sync": "tab:red"}
    charts = [
        ("io-throughput.png", "ok answers per second", lambda f: f.ok_rps, "linear"),
        ("io-p99.png", "p99 latency (ms, log scale)", lambda f: f.p99_ms or None, "log"),
    ]
    written = []
    for filename, ylabel, value, yscale in charts:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for run in runs:
            baseline = run["label"] == BASELINE
            for series in ("gevent", "sync", "gevent-direct", "sync-direct"):
                points = sorted(
                    (c["case"]["connections"], y)
                    for c in io_cases(run)
                    if c["case"]["series"] == series
                    and (y := value(Figures.from_wrk(c["wrk"]))) is not None
                )
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                worker_class, _, direct = series.partition("-")
                name = f"{worker_class}, " + ("lb1 -> app1 direct" if direct else "via VIP")
                ax.plot(
                    xs,
                    ys,
                    ":" if direct else "-",
                    color=colours[worker_class],
                    alpha=1.0 if baseline else 0.45,
                    marker="s" if direct else "o",
                    label=name if baseline else f"{name} ({run['label']})",
                )
        ax.set_xscale("log")
        ax.set_yscale(yscale)
        ax.set_xticks([1000, 5000, 10000], ["1,000", "5,000", "10,000"])
        ax.set_xlabel("concurrent connections (GET /io?ms=100)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"gunicorn gevent vs sync workers: {ylabel.split(' (')[0]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.text(
            0.01,
            0.01,
            "0 answers/s, or a missing p99 point: no answer in that case (see the table).",
            fontsize=7,
            color="grey",
        )
        fig.tight_layout()
        fig.savefig(docs / filename)
        plt.close(fig)
        written.append(filename)
    return written


# --- Commands -------------------------------------------------------------------------------


def build(run_dir: Path, label: str, docs: Path) -> int:
    run = collect_run(run_dir, label)
    runs_dir = docs / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    (runs_dir / f"{label}.json").write_text(json.dumps(run, indent=2) + "\n")

    runs = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*.json"))]
    baseline = next((r for r in runs if r["label"] == BASELINE), None)
    trials = [r for r in runs if r["label"] != BASELINE]
    shown = baseline or run
    plots = draw_plots([shown], docs)

    readme = docs / "README.md"
    text = readme.read_text()
    text = replace_block(text, "results", render_results(shown, plots))
    text = replace_block(text, "tuning", render_tuning(baseline, trials))
    readme.write_text(text)

    missing = [c["case"]["name"] for c in run["cases"] if not c.get("wrk")]
    print("\n".join(results_table(run)))
    print("\n".join(comparisons(run)))
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
    built = commands.add_parser("build", help="keep a run, redraw docs/benchmarks")
    built.add_argument("--run", type=Path, required=True, help="raw results of bench/run.sh")
    built.add_argument("--label", required=True)
    built.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    if args.command == "machine":
        args.out.write_text(json.dumps(describe_machine(), indent=2) + "\n")
        return 0
    return build(args.run, args.label, args.docs)


if __name__ == "__main__":
    sys.exit(main())
