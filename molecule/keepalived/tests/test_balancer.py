"""Each balancer runs keepalived hardened, with a checked config and unprivileged scripts."""

import testinfra

LIBEXEC = "/usr/local/libexec/keepalived"


def test_keepalived_runs_and_is_enabled(host: testinfra.host.Host) -> None:
    keepalived = host.service("keepalived")
    journal = host.run("journalctl --no-pager -u keepalived -n 40").stdout
    assert keepalived.is_running, journal
    assert keepalived.is_enabled


def test_unit_is_hardened(host: testinfra.host.Host) -> None:
    show = host.check_output(
        "systemctl show keepalived -p NoNewPrivileges -p ProtectSystem -p PrivateTmp"
    )
    assert set(show.splitlines()) == {
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
    }


def test_live_config_passes_the_config_test(host: testinfra.host.Host) -> None:
    result = host.run(f"{LIBEXEC}/config-test /etc/keepalived/keepalived.conf")
    assert result.rc == 0, result.stderr
    conf = host.file("/etc/keepalived/keepalived.conf")
    assert conf.mode == 0o640  # it holds the VRRP password
    assert "enable_script_security" in conf.content_string


def test_config_test_rejects_a_broken_config(host: testinfra.host.Host) -> None:
    broken = host.run(
        "sed 's/virtual_router_id .*/virtual_router_id 300/' /etc/keepalived/keepalived.conf"
        " > /root/broken.conf && " + f"{LIBEXEC}/config-test /root/broken.conf"
    )
    host.run("rm -f /root/broken.conf")
    assert broken.rc == 1
    assert "300" in broken.stderr


def test_scripts_run_as_the_unprivileged_user(host: testinfra.host.Host) -> None:
    uid = host.user("keepalived_script").uid
    assert uid != 0
    # Every state change line was written by the notify script, as that user.
    owners = host.check_output(
        "journalctl --no-pager -t keepalived-notify -o verbose --output-fields=_UID"
        " | sed -n 's/^ *_UID=//p' | sort -u"
    )
    assert owners.split() == [str(uid)]
    # The health check works as that user, and keepalived found nothing insecure.
    check = host.run(
        "runuser -u keepalived_script -- /usr/bin/curl -fsS http://127.0.0.1:8081/healthz"
    )
    assert check.rc == 0, check.stderr
    warnings = host.run(
        "journalctl --no-pager -u keepalived | grep -Ei 'security violation|not found|unsafe'"
    )
    assert warnings.stdout == ""


def test_kernel_settings_are_written(host: testinfra.host.Host) -> None:
    settings = host.file("/etc/sysctl.d/60-keepalived.conf")
    assert "net.ipv4.ip_nonlocal_bind = 1" in settings.content_string


def test_nginx_tells_keepalived_when_it_starts_and_stops(host: testinfra.host.Host) -> None:
    # The drop-in is live on nginx.service, and the file keepalived tracks says "runs".
    show = host.check_output("systemctl show nginx -p DropInPaths -p ExecStopPost")
    assert "/etc/systemd/system/nginx.service.d/keepalived-track.conf" in show
    assert "unit-state /run/keepalived-track/nginx.service 1" in show
    assert host.file("/run/keepalived-track/nginx.service").content_string.strip() == "0"


def test_keepalived_gets_the_cpu_before_nginx(host: testinfra.host.Host) -> None:
    # CPUWeight=1000 is cgroup v1's cpu.shares 10240 (a unit's default: 1024).
    group = host.check_output("systemctl show -p ControlGroup --value keepalived")
    assert host.file(f"/sys/fs/cgroup/cpu{group}/cpu.shares").content_string.strip() == "10240"
    # Containers cannot schedule realtime: the role leaves it out rather than have keepalived
    # fail at it on every start.
    assert "vrrp_rt_priority" not in host.file("/etc/keepalived/keepalived.conf").content_string
    failed = host.run(
        "journalctl --no-pager -u keepalived | grep -E 'cannot raise priority|Unable to lock'"
    )
    assert failed.stdout == ""


def test_the_check_passes_a_busy_nginx_and_fails_a_hung_one(host: testinfra.host.Host) -> None:
    """The check keepalived runs is the status page, wrapped: when the page does not answer
    (here a command that fails), it passes only if nginx's processes used CPU meanwhile."""
    configured = host.file("/etc/keepalived/keepalived.conf").content_string
    check = f"{LIBEXEC}/check-serving nginx.service"
    assert f'script "{check} /usr/bin/curl' in configured
    as_user = "runuser -u keepalived_script --"
    # Busy: nginx serves 5,000 requests (one kept-alive connection, well over the 10 ms
    # granularity of the CPU time it is judged by) while the status page "fails".
    load = 'curl -s "http://127.0.0.1/?[1-5000]" > /dev/null'
    busy = host.run(f"{as_user} {check} sh -c '{load}; false'")
    assert busy.rc == 0, busy.stderr
    # Hung: every nginx process stopped (SIGSTOP) for a second, far below the fall window.
    hung = host.run(
        f"pkill -STOP -x nginx; {as_user} {check} sh -c 'sleep 1; false'; rc=$?;"
        " pkill -CONT -x nginx; exit $rc"
    )
    assert hung.rc == 1, hung.stderr
