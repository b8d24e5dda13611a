#!/bin/sh
# Turns a fresh Debian 12 root file system into one that boots systemd as PID 1 in a
# container and behaves like a bare machine reached over SSH. Runs inside the new root:
# in a chroot after debootstrap, or as a RUN step of the Dockerfile. Idempotent.
set -eu

# Full apt sources, as on an installed machine (debootstrap writes only the main suite).
cat > /etc/apt/sources.list <<'SOURCES'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES

# Units that drive hardware or consoles have nothing to do in a container and only leave
# the system "degraded"; masking them lets `systemctl is-system-running` say "running".
for unit in getty.target console-getty.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-remount-fs.service \
    systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount \
    sys-kernel-tracing.mount systemd-firstboot.service; do
  ln -sf /dev/null "/etc/systemd/system/$unit"
done

# Every machine needs its own SSH host keys: none are baked into the image, sshd makes
# them on first boot.
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
cat > /etc/systemd/system/ssh.service.d/host-keys.conf <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT
mkdir -p /etc/systemd/system/multi-user.target.wants
ln -sf /lib/systemd/system/ssh.service /etc/systemd/system/multi-user.target.wants/ssh.service

# The lab puts its SSH key into /root/.ssh/authorized_keys of each new machine.
install -d -m 700 /root/.ssh

# A machine id is made at first boot, per container.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/hostname

# No package lists, and dated as never updated, so the first `apt update` (or Ansible's
# cache_valid_time) fetches fresh ones, as on a machine that was just installed.
apt-get clean
rm -rf /var/lib/apt/lists/* /var/lib/apt/periodic/* /var/cache/apt/*.bin /tmp/* /var/tmp/*
touch -d @0 /var/lib/apt/lists
