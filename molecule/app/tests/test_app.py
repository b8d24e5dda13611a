"""The app tier as an operator sees it: a hardened service, on the private address only, ready,
keeping sessions in Redis; deploys and a rollback that no looping client noticed, each running
the release it switched to; the newest releases kept, older ones gone; a deploy that cannot
become ready failing with the journal; sync workers serving too; metrics that count every
worker's requests once and start afresh with the service."""

import json
import re
import shlex
import time
from collections.abc import Callable

import pytest
from conftest import addresses, journal, tcp_connects
from testinfra.host import Host

testinfra_hosts = ["app1"]

SERVICE = "webstack-app.service"
SOCKET = "webstack-app.socket"
USER = "webstack-app"
BASE = "/opt/webstack-app"
ADDRESS, PORT = addresses()["app1"], 8000
URL = f"http://{ADDRESS}:{PORT}"
# The highest `systemd-analyze security` exposure the README may claim ("OK" is below 5).
MAX_EXPOSURE = 2.5


@pytest.fixture(scope="module")
def client(machine: Callable[[str], Host]) -> Host:
    """lb1, where a balancer would be: the app's clients come from there."""
    return machine("lb1")


def curl(client: Host, *args: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body of one request made on `client`."""
    command = "curl -sS --max-time 10 -D /dev/stderr " + " ".join(shlex.quote(a) for a in args)
    result = client.run(command)
    assert result.rc == 0, f"curl {' '.join(args)} failed: {result.stderr}"
    blocks = [b for b in result.stderr.replace("\r", "").split("\n\n") if b.strip()]
    lines = blocks[-1].splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, result.stdout


def main_pid(host: Host) -> int:
    return int(host.run(f"systemctl show --property=MainPID --value {SERVICE}").stdout)


def worker_pids(host: Host) -> list[str]:
    """The master and its workers."""
    pid = main_pid(host)
    return host.run(f"ps -o pid= --pid {pid} --ppid {pid}").stdout.split()


def current_release(host: Host) -> str:
    return host.file(f"{BASE}/current").linked_to.rsplit("/", 1)[-1]


def test_socket_and_service_are_active_and_enabled(host: Host) -> None:
    for unit in (SOCKET, SERVICE):
        service = host.service(unit)
        assert service.is_running or host.run(f"systemctl is-active {unit}").rc == 0, journal(
            host, unit
        )
        assert service.is_enabled, f"{unit} is not enabled"


def test_service_runs_as_its_user_without_login_shell(host: Host) -> None:
    pid = main_pid(host)
    assert pid > 0, journal(host, SERVICE)
    users = host.run(f"ps -o user= --pid {pid} --ppid {pid}").stdout.split()
    assert len(users) >= 2, f"no workers under the master {pid}:\n{journal(host, SERVICE)}"
    assert set(users) == {USER}, f"processes run as {set(users)}"
    user = host.user(USER)
    assert user.shell == "/usr/sbin/nologin"
    assert user.group == USER


def test_listens_only_on_the_private_address(host: Host, client: Host) -> None:
    listening = host.run(f"ss -Hltn 'sport = :{PORT}'").stdout.split("\n")
    addresses = {line.split()[3] for line in listening if line.strip()}
    assert addresses == {f"{ADDRESS}:{PORT}"}, f"port {PORT} is open on {addresses}"
    assert tcp_connects(client, ADDRESS, PORT)
    assert not tcp_connects(host, "127.0.0.1", PORT)


def test_readyz_answers_200_from_this_machine(client: Host) -> None:
    status, headers, body = curl(client, f"{URL}/readyz")
    assert status == 200, body
    assert json.loads(body) == {"status": "ok", "redis": "ok"}
    assert headers.get("x-served-by") == "app1"


def test_a_session_survives_between_requests(client: Host) -> None:
    jar = "/tmp/app-test-cookies.txt"
    client.run(f"rm -f {jar}")
    cookies = ["-b", jar, "-c", jar]
    json_body = ["-H", "Content-Type: application/json", "-d", '{"note": "first"}']
    status, _, body = curl(client, *cookies, *json_body, f"{URL}/api/session/notes")
    assert status == 201, body
    status, _, body = curl(client, *cookies, f"{URL}/api/session")
    assert status == 200, body
    session = json.loads(body)
    assert session["notes"] == ["first"], body
    assert session["served_by"] == "app1"
    status, _, body = curl(client, *cookies, "-X", "DELETE", f"{URL}/api/session")
    assert status == 200, body
    status, _, body = curl(client, *cookies, f"{URL}/api/session")
    assert json.loads(body)["notes"] == [], body


def test_settings_are_readable_by_the_service_only(host: Host) -> None:
    env = host.file("/etc/webstack-app/app.env")
    assert (env.user, env.group, env.mode) == ("root", USER, 0o640)
    readable = host.run(f"su -s /bin/sh nobody -c 'cat {env.path}'")
    assert readable.rc != 0


# Posts a note as a balancer forwards an HTTPS request; prints the status and the Set-Cookie.
FORWARDED_POST = """
import http.client, sys
connection = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
headers = {"Content-Type": "application/json", "X-Forwarded-Proto": "https"}
connection.request("POST", "/api/session/notes", body=b'{"note": "tls"}', headers=headers)
answer = connection.getresponse()
print(answer.status, answer.getheader("Set-Cookie"))
"""


def test_gunicorn_runs_gevent_trusting_the_balancers_only(
    host: Host, machine: Callable[[str], Host]
) -> None:
    invocation = host.run(f"systemctl show --property=InvocationID --value {SERVICE}").stdout
    logged = host.run(f"journalctl --no-pager --output=cat _SYSTEMD_INVOCATION_ID={invocation}")
    assert "Using worker: gevent" in logged.stdout, journal(host, SERVICE)
    # X-Forwarded-Proto is believed from the balancer only: its HTTPS request gets a Secure
    # cookie, the same header from another machine does not.
    for name, secure in (("lb1", True), ("redis1", False)):
        probe = f"python3 -c {shlex.quote(FORWARDED_POST)} {ADDRESS} {PORT}"
        answer = machine(name).check_output(probe)
        status, _, cookie = answer.partition(" ")
        assert status == "201", answer
        assert ("; Secure" in cookie) is secure, f"from {name}: {cookie}"


def open_files_limit(host: Host, pid: int | str) -> int:
    """The soft open-files limit of a process."""
    limits = host.file(f"/proc/{pid}/limits").content_string
    found = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
    assert found, limits
    return int(found.group(1))


def test_open_files_limit_fits_c10k(host: Host) -> None:
    # LimitNOFILE=65536; a container cannot give more than its own limit (PID 1's).
    expected = min(65536, open_files_limit(host, 1))
    got = [open_files_limit(host, pid) for pid in worker_pids(host)]
    assert got and set(got) == {expected}, f"workers may open {got} files, not {expected}"
    assert expected >= 10000 + 1024, "too few files for 10k connections per worker"


def test_code_belongs_to_root(host: Host) -> None:
    release = host.file(f"{BASE}/current").linked_to
    assert host.file(release).user == "root"
    writable = host.run(f"su -s /bin/sh {USER} -c 'touch {release}/probe'")
    assert writable.rc != 0


# What the role README and the issue promise, read back from systemd (name -> value).
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ReadWritePaths": "",
}


def test_systemd_applies_each_hardening_directive(host: Host) -> None:
    shown = host.run(f"systemctl show --property={','.join(HARDENING)} {SERVICE}").stdout
    got = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    # systemd lists address families in its own order.
    got["RestrictAddressFamilies"] = " ".join(
        sorted(got.get("RestrictAddressFamilies", "").split())
    )
    assert got == HARDENING, f"systemd applies {got}"


def test_systemd_rates_the_service_hardened(host: Host) -> None:
    report = host.run(f"systemd-analyze security {SERVICE} --no-pager").stdout
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", report)
    assert found, report
    assert float(found.group(1)) <= MAX_EXPOSURE, report


def switch_report(client: Host, phase: str) -> dict:
    report = client.file(f"/var/tmp/app-switch-{phase}.json")
    assert report.exists, f"no report of the {phase}: run side_effect first"
    return json.loads(report.content_string)


def check_no_request_failed(report: dict) -> None:
    seen = report["client"]
    assert seen["failures"] == 0, f"{seen['failures']} requests failed: {seen['errors']}"
    assert set(seen["statuses"]) == {"200"}, f"answers other than 200: {seen['statuses']}"
    assert seen["requests"] >= 50, f"only {seen['requests']} requests: the client hardly ran"
    assert not seen["stopped_by_deadline"], "the client ran until its deadline"
    # The service really restarted, and did so while the client was looping.
    assert report["before"]["MainPID"] != report["after"]["MainPID"]
    restarted = float(report["after"]["ExecMainStartTimestamp"].lstrip("@"))
    assert seen["began"] < restarted < seen["ended"], report
    # The new main process runs the release switched to: its interpreter is that venv's.
    release = report["release_after"]
    assert f"/releases/{release}/bin/python" in report["command_after"], report["command_after"]


def test_deploy_of_a_second_release_fails_no_request(client: Host) -> None:
    report = switch_report(client, "deploy")
    first = report["release_before"]
    assert report["release_after"] == f"{first}.post1"
    check_no_request_failed(report)


def test_rollback_fails_no_request_and_runs_the_first_release(client: Host) -> None:
    report = switch_report(client, "rollback")
    assert report["release_before"] == f"{report['release_after']}.post1"
    check_no_request_failed(report)


def test_deploy_of_a_third_release_fails_no_request(client: Host) -> None:
    first = switch_report(client, "rollback")["release_after"]
    report = switch_report(client, "third")
    assert (report["release_before"], report["release_after"]) == (first, f"{first}.post2")
    check_no_request_failed(report)


def test_only_the_two_newest_releases_are_kept(host: Host, client: Host) -> None:
    # app_keep_releases: 2 (molecule.yml), after the first, the second and the third release.
    first = switch_report(client, "rollback")["release_after"]
    releases = sorted(host.run(f"ls {BASE}/releases").stdout.split())
    assert releases == [f"{first}.post1", f"{first}.post2"], f"kept: {releases}"
    assert current_release(host) == f"{first}.post2"
    for release in releases:
        assert host.file(f"{BASE}/releases/{release}/release.json").exists


def test_rollback_to_an_unknown_release_is_refused_clearly(client: Host, host: Host) -> None:
    refusal = host.file("/var/tmp/app-rollback-refused.txt")
    assert refusal.exists, "the rollback to an unknown release was not refused"
    assert "is not kept on app1" in refusal.content_string


def test_a_deploy_that_cannot_become_ready_fails_with_the_journal(host: Host) -> None:
    # side_effect.yml deployed with a wrong Redis password (app_ready_timeout 10 s).
    report = host.file("/var/tmp/app-deploy-failed.txt")
    assert report.exists, "the deploy with a wrong Redis password did not fail"
    message = report.content_string
    assert f"did not answer 200 on {URL}/readyz within 10 s" in message, message
    assert "Its journal ends with:" in message, message
    journal_lines = [
        line for line in message.split("Its journal ends with:")[1].splitlines() if line
    ]
    assert len(journal_lines) >= 5, f"too few journal lines in the failure:\n{message}"
    # The journal says why: Redis refused the password.
    assert any("readiness check failed: AuthenticationError" in x for x in journal_lines), message


def test_sync_workers_served_ready_and_with_sessions(host: Host) -> None:
    report = host.file("/var/tmp/app-sync.json")
    assert report.exists, "no report of the sync phase: run side_effect first"
    seen = json.loads(report.content_string)
    assert seen["readyz"] == [200, {"status": "ok", "redis": "ok"}], seen
    assert seen["added"][0] == 201, seen
    assert seen["read"][0] == 200, seen
    assert seen["read"][1]["notes"] == ["sync"], seen
    assert any("Using worker: sync" in line for line in seen["journal"]), seen["journal"]


def test_gevent_serves_again_after_the_sync_phase(host: Host) -> None:
    invocation = host.run(f"systemctl show --property=InvocationID --value {SERVICE}").stdout
    logged = host.run(f"journalctl --no-pager --output=cat _SYSTEMD_INVOCATION_ID={invocation}")
    assert "Using worker: gevent" in logged.stdout, journal(host, SERVICE)


# --- The app's metrics (several workers, one sum) -------------------------------------------

METRICS_DIR = "/run/webstack-app/metrics"
HELLO = {"route": "/hello", "method": "GET", "status": "200"}
# Each worker's own count of GET /hello, read from its files in the metrics folder (pid -> n).
PER_WORKER = f"""
import glob, json
from prometheus_client.multiprocess import MultiProcessCollector
counts = {{}}
for path in glob.glob("{METRICS_DIR}/counter_*.db"):
    pid = path.rsplit("_", 1)[1].removesuffix(".db")
    counts[pid] = sum(
        s.value for m in MultiProcessCollector.merge([path], accumulate=False)
        for s in m.samples
        if s.name == "webstack_http_requests_total" and s.labels.get("route") == "/hello"
    )
print(json.dumps(counts))
"""
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(client: Host) -> dict[tuple[str, frozenset], float]:
    """GET /metrics from the client: (name, labels) -> value."""
    status, headers, body = curl(client, f"{URL}/metrics")
    assert status == 200, body
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    samples = {}
    for line in body.splitlines():
        found = SAMPLE.match(line)
        if found and not line.startswith("#"):
            labels = frozenset(LABEL.findall(found.group(2) or ""))
            samples[(found.group(1), labels)] = float(found.group(3))
    return samples


def hello_count(samples: dict[tuple[str, frozenset], float]) -> float:
    return samples.get(("webstack_http_requests_total", frozenset(HELLO.items())), 0.0)


def per_worker_hello(host: Host) -> dict[int, float]:
    result = host.run(f"{BASE}/current/bin/python -c {shlex.quote(PER_WORKER)}")
    assert result.rc == 0, result.stderr
    return {int(pid): count for pid, count in json.loads(result.stdout).items()}


def workers(host: Host) -> set[int]:
    pid = main_pid(host)
    return {int(p) for p in host.run(f"ps -o pid= --ppid {pid}").stdout.split()}


def metric_file_pids(host: Host) -> set[int]:
    names = host.run(f"ls {METRICS_DIR}").stdout.split()
    return {int(name.rsplit("_", 1)[1].removesuffix(".db")) for name in names}


def test_metrics_answer_on_the_app_port(client: Host) -> None:
    samples = scrape(client)
    names = {name for name, _ in samples}
    for name in (
        "webstack_http_requests_total",
        "webstack_http_request_duration_seconds_bucket",
        "webstack_http_requests_in_flight",
        "webstack_session_store_errors_total",
    ):
        assert name in names, f"{name} not in /metrics: {sorted(names)}"
    assert samples[("webstack_http_requests_in_flight", frozenset())] >= 1  # this scrape


def test_metrics_folder_belongs_to_the_service_alone(host: Host) -> None:
    folder = host.file(METRICS_DIR)
    assert folder.is_directory
    assert (folder.user, folder.group, folder.mode) == (USER, USER, 0o750)
    environment = host.run(f"systemctl show --property=Environment --value {SERVICE}").stdout
    assert f"PROMETHEUS_MULTIPROC_DIR={METRICS_DIR}" in environment.split()
    written = host.run(f"su -s /bin/sh nobody -c 'touch {METRICS_DIR}/probe'")
    assert written.rc != 0


def test_requests_over_several_workers_are_counted_exactly_once(host: Host, client: Host) -> None:
    live = workers(host)
    assert len(live) >= 2, f"the scenario needs several workers, runs {live}"
    before, before_per_worker = hello_count(scrape(client)), per_worker_hello(host)
    sent, answered_by = 0, set()
    # New connections in batches, until two workers have answered some (bounded: 20 batches).
    while len(answered_by) < 2 and sent < 400:
        batch = client.run(
            "for i in $(seq 20); do "
            f"curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 {URL}/hello; done"
        )
        assert batch.stdout.split() == ["200"] * 20, batch.stdout + batch.stderr
        sent += 20
        answered_by = {
            pid
            for pid, count in per_worker_hello(host).items()
            if pid in live and count > before_per_worker.get(pid, 0)
        }
    assert len(answered_by) >= 2, f"{sent} requests, all answered by {answered_by}"
    # Whichever worker answers /metrics, it reports the sum of all of them.
    for _ in range(3):
        assert hello_count(scrape(client)) - before == sent


def test_a_replaced_worker_keeps_its_counts_and_drops_its_gauge(host: Host, client: Host) -> None:
    # gunicorn replaces a worker that exits (max_requests, timeout, crash); the master's
    # child_exit hook (gunicorn.conf.py) must drop its in-flight gauge and keep its counters.
    before = hello_count(scrape(client))
    counted = {pid for pid, count in per_worker_hello(host).items() if count > 0}
    victim = min(counted & workers(host))
    assert host.run(f"kill -TERM {victim}").rc == 0
    for _ in range(30):
        if victim not in workers(host) and len(workers(host)) >= 2:
            break
        time.sleep(1)
    assert victim not in workers(host), f"worker {victim} still runs"
    assert len(workers(host)) >= 2, journal(host, SERVICE)
    assert not host.file(f"{METRICS_DIR}/gauge_livesum_{victim}.db").exists, "gauge kept"
    assert host.file(f"{METRICS_DIR}/counter_{victim}.db").exists, "counts of the worker lost"
    assert hello_count(scrape(client)) == before


# Last of the module: it restarts the service.
def test_a_restart_starts_with_fresh_metrics(host: Host, client: Host) -> None:
    old = metric_file_pids(host)
    assert old, "no metrics files before the restart"
    assert hello_count(scrape(client)) > 0
    assert host.run(f"systemctl restart {SERVICE}").rc == 0, journal(host, SERVICE)
    for _ in range(30):
        if curl(client, f"{URL}/readyz")[0] == 200:
            break
        time.sleep(1)
    samples = scrape(client)
    assert hello_count(samples) == 0, "counters survived the restart"
    files = metric_file_pids(host)
    assert files, "no metrics files after the restart"
    assert not files & old, f"files of the old processes {sorted(files & old)} are still there"
    assert files <= workers(host), f"files of processes that are not workers: {files}"
