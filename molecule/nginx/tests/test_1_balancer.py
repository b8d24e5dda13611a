"""The balancer as an operator sees it: nginx runs, listens where it should, is sized for C10k."""

import re
import socket

import pytest
import testinfra
import yaml
from nginx_client import LB, PROJECT

testinfra_hosts = ["lb1"]

STATUS_PORT = 8081
# Open files asked for nginx (role defaults); a container gets at most what the host's
# docker daemon allows, so the effective value is the smaller of the two.
NOFILE = 65536


def journal(host: testinfra.host.Host) -> str:
    return host.run("journalctl -u nginx -n 40 --no-pager").stdout


def test_nginx_runs_and_is_enabled(host: testinfra.host.Host) -> None:
    nginx = host.service("nginx")
    assert nginx.is_running, journal(host)
    assert nginx.is_enabled


def test_listeners(host: testinfra.host.Host) -> None:
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert host.socket("tcp://0.0.0.0:443").is_listening
    assert host.socket(f"tcp://127.0.0.1:{STATUS_PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{STATUS_PORT}").is_listening


def test_status_listener_is_local_only() -> None:
    with pytest.raises(OSError):
        socket.create_connection((LB, STATUS_PORT), timeout=3).close()


def test_keepalived_check_and_stub_status(host: testinfra.host.Host) -> None:
    # The exact command keepalived's default track script runs.
    check = host.run(f"curl -fsS --max-time 2 http://127.0.0.1:{STATUS_PORT}/healthz")
    assert check.rc == 0 and check.stdout == "ok\n", check.stderr
    stub = host.run(f"curl -fsS --max-time 2 http://127.0.0.1:{STATUS_PORT}/stub_status")
    assert stub.rc == 0 and stub.stdout.startswith("Active connections:"), stub.stderr


def test_live_configuration_is_valid_and_the_tested_one(host: testinfra.host.Host) -> None:
    test = host.run("nginx -t")
    assert test.rc == 0, test.stderr
    # What runs is byte for byte what was tested in the staging tree.
    files = [
        "nginx.conf",
        "webstack/upstream.conf",
        "webstack/backends.conf",
        "webstack/site.conf",
        "webstack/status.conf",
        "webstack/tls/webstack.crt",
        "webstack/tls/webstack.key",
    ]
    for name in files:
        live = host.file(f"/etc/nginx/{name}")
        staged = host.file(f"/etc/nginx/ansible-staging/{name}")
        assert live.sha256sum == staged.sha256sum, name
    key = host.file("/etc/nginx/webstack/tls/webstack.key")
    assert (key.user, key.mode) == ("root", 0o600)
    assert host.file("/etc/nginx/nginx.conf").contains("Managed by Ansible")


def test_each_worker_has_its_own_accept_queue(host: testinfra.host.Host) -> None:
    # reuseport: one listening socket per worker on each port, so the kernel spreads a burst
    # of new connections over the workers instead of one worker accepting them all.
    workers = len(host.run("pgrep -f 'nginx: worker process'").stdout.split())
    assert workers >= 1
    for port in (80, 443):
        listening = host.run(f"ss -Hltn sport = :{port}").stdout.splitlines()
        assert len(listening) == workers, listening


def test_sized_for_ten_thousand_clients(host: testinfra.host.Host) -> None:
    # One worker per CPU (10,000 clients are held by test_4_limits, not by a number here).
    workers = host.run("pgrep -u www-data -x nginx").stdout.split()
    assert len(workers) == int(host.run("nproc").stdout), journal(host)
    # What nginx gets is capped by the machine: PID 1's hard limit (in the lab, the
    # container's, which the host's docker daemon sets). The role asks for no more, so no
    # start or reload logs a failed setrlimit.
    pid1 = host.file("/proc/1/limits").content_string
    ceiling = int(re.search(r"Max open files\s+\d+\s+(\d+)", pid1).group(1))
    expected = min(NOFILE, ceiling)
    unit = host.run("systemctl show nginx -p LimitNOFILE --value").stdout.strip()
    assert unit == str(expected)
    master = host.file("/run/nginx.pid").content_string.strip()
    for pid in [master, *workers]:
        limits = host.file(f"/proc/{pid}/limits").content_string
        soft = int(re.search(r"Max open files\s+(\d+)", limits).group(1))
        # Each connection is a file: 10,000 proxied clients are 20,000 connections.
        assert soft == expected and soft >= 20000, limits
    assert "setrlimit" not in host.file("/var/log/nginx/error.log").content_string
    # The kernel's side, as the machine has it (not as a file says it).
    for key, value in (("net.core.somaxconn", "4096"), ("net.ipv4.tcp_tw_reuse", "1")):
        assert host.run(f"sysctl -n {key}").stdout.strip() == value, key


def test_kernel_settings_agree_with_role_common(host: testinfra.host.Host) -> None:
    """On a balancer both files are read (60-common.conf, then 60-nginx.conf): a key in both
    must have one value, or the later file silently wins over what role common meant."""
    common = yaml.safe_load((PROJECT / "roles/common/defaults/main.yml").read_text())
    wanted = {key: str(value) for key, value in common["common_sysctl_settings"].items()}
    written = dict(
        line.split(" = ", 1)
        for line in host.file("/etc/sysctl.d/60-nginx.conf").content_string.splitlines()
        if " = " in line and not line.startswith("#")
    )
    shared = set(wanted) & set(written)
    assert "net.core.somaxconn" in shared, sorted(written)
    assert "fs.file-max" not in written, "the machine's file ceiling is role common's to raise"
    conflicts = {key: (written[key], wanted[key]) for key in shared if written[key] != wanted[key]}
    assert not conflicts, f"nginx vs common: {conflicts}"


def test_service_is_hardened(host: testinfra.host.Host) -> None:
    show = host.run("systemctl show nginx -p NoNewPrivileges -p ProtectSystem -p PrivateTmp").stdout
    assert "NoNewPrivileges=yes" in show
    assert "ProtectSystem=strict" in show
    assert "PrivateTmp=yes" in show
