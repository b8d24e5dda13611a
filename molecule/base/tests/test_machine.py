"""The harness boots machines the way the lab does: systemd as PID 1, sshd, our converge."""

import testinfra


def test_systemd_is_pid_1_and_healthy(host: testinfra.host.Host) -> None:
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    failed = host.run("systemctl --failed --no-legend").stdout
    assert state == "running", f"system is {state}; failed units:\n{failed}"


def test_sshd_is_up(host: testinfra.host.Host) -> None:
    ssh = host.service("ssh")
    assert ssh.is_running, host.run("journalctl -u ssh --no-pager -n 30").stdout
    assert host.socket("tcp://0.0.0.0:22").is_listening


def test_converge_ran(host: testinfra.host.Host) -> None:
    marker = host.file("/etc/webstack-harness")
    assert marker.exists
    assert marker.mode == 0o644
