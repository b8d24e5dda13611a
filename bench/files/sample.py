"""What a lab machine holds now, as one JSON line (report.py sample runs it in each machine
with `docker exec -i MACHINE python3 -`): per nginx and gunicorn process its resident memory
and open sockets, and the kernel's TCP counters (accept queue overflows, connections opened)."""

import json
import os


def counters(path: str) -> dict:
    """The `Name: field...` / `Name: value...` line pairs of /proc/net/snmp or netstat."""
    found = {}
    with open(path) as lines:
        rows = lines.read().splitlines()
    for head, values in zip(rows[::2], rows[1::2], strict=False):
        prefix, names = head.split(":", 1)
        for name, value in zip(names.split(), values.split(":", 1)[1].split(), strict=False):
            found[f"{prefix}.{name}"] = int(value)
    return found


def processes() -> list:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if not (cmd.startswith("nginx") or "gunicorn" in cmd):
                continue
            with open(f"/proc/{pid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            sockets = sum(
                os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
                for fd in os.listdir(f"/proc/{pid}/fd")
            )
        except OSError:  # gone meanwhile
            continue
        found.append(
            {
                "pid": int(pid),
                "ppid": int(status["PPid"]),
                "cmd": cmd[:80],
                "rss_kib": int(status.get("VmRSS", "0 kB").split()[0]),
                "sockets": sockets,
            }
        )
    return found


keep = (
    "Tcp.ActiveOpens",
    "Tcp.PassiveOpens",
    "Tcp.AttemptFails",
    "Tcp.EstabResets",
    "Tcp.CurrEstab",
    "Tcp.RetransSegs",
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPAbortOnMemory",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent",
    "TcpExt.TW",
)
tcp = {**counters("/proc/net/snmp"), **counters("/proc/net/netstat")}
print(
    json.dumps(
        {
            "processes": processes(),
            "tcp": {name: tcp[name] for name in keep if name in tcp},
        }
    )
)
