#!/usr/bin/env bash
# Installs what the project needs on the host. Made for a fresh Debian 12 machine, as root;
# installs only what is missing, so a second run takes a second.
#
#   scripts/host-setup.sh tools      what lint and the unit tests need (no Docker)
#   scripts/host-setup.sh machines   that, plus the Docker engine (started) and debootstrap
set -euo pipefail

die() { echo "host-setup: $*" >&2; exit 1; }

case ${1:-machines} in
  tools) machines=false ;;
  machines) machines=true ;;
  *) die "usage: host-setup.sh [tools|machines]" ;;
esac

need=()
if $machines; then
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
fi
command -v git >/dev/null || need+=(git)
command -v ssh >/dev/null || need+=(openssh-client)
command -v flock >/dev/null || need+=(util-linux)
# The app's tests start a real redis-server of their own on 127.0.0.1.
command -v redis-server >/dev/null || need+=(redis-server)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)

if ((${#need[@]})); then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}; run as root (or install them) first"
  echo "host-setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed: is a Debian mirror reachable?"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "apt-get install ${need[*]} failed"
  # The tests run their own Redis; the packaged one need not run on this machine.
  if [[ " ${need[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi

$machines || exit 0

if ! docker info >/dev/null 2>&1; then
  log=/var/log/webstack-dockerd.log
  if [ -d /run/systemd/system ]; then
    echo "host-setup: starting the Docker engine (systemctl start docker)"
    systemctl start docker || die "systemctl start docker failed; see: journalctl -u docker"
  else
    echo "host-setup: starting the Docker engine (dockerd, log: $log)"
    setsid nohup dockerd >"$log" 2>&1 < /dev/null &
  fi
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  $machines || exit 0

if ! docker info >/dev/null 2>&1; then
    [ -f "$log" ] && tail -n 15 "$log" >&2
    die "the Docker engine did not start within 30 s (see above, or $log)"
  fi
fi

# Every lab machine's systemd (PID 1 of its container) takes inotify instances from the host's
# per-user budget, 128 by default: the whole topology beside a scenario exhausts it, and
# containers then boot without sshd ("Failed to create inotify object: Too many open files").
# Raised only, never lowered, and kept across reboots.
inotify=/proc/sys/fs/inotify/max_user_instances
if [ -w "$inotify" ] && [ "$(cat "$inotify")" -lt 1024 ]; then
  echo "host-setup: raising fs.inotify.max_user_instances to 1024 for the lab's machines"
  echo 'fs.inotify.max_user_instances = 1024' > /etc/sysctl.d/60-webstack-lab.conf
  echo 1024 > "$inotify"
fi
