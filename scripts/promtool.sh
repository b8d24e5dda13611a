#!/usr/bin/env bash
# Runs promtool from Debian's own `prometheus` package (the version the monitoring machines
# run) on this machine, without installing the package or starting any service: the package is
# fetched once with `apt-get download`, only /usr/bin/promtool is kept, in
# .cache/promtool/VERSION/, and that copy runs with the arguments given. A newer Debian version
# of the package is fetched again; a missing copy is made again.
#
#   scripts/promtool.sh check rules FILE...      scripts/promtool.sh test rules TEST.yml...
set -euo pipefail

die() { echo "promtool.sh: $*" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${PROMTOOL_CACHE:-$root/.cache/promtool}

# The version apt would install; asks for the package lists once when there are none yet.
candidate() { apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
version=$(candidate)
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  [ "$(id -u)" = 0 ] || die "apt knows no 'prometheus' package; run 'apt-get update' as root first"
  apt-get update -qq || die "apt-get update failed: is a Debian mirror reachable?"
  version=$(candidate)
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    die "no 'prometheus' package in the apt sources"
  fi
fi

bin=$cache/$version/promtool
if ! [ -x "$bin" ]; then
  work=$(mktemp -d)
  # apt drops its privileges to _apt for downloads; let it write here.
  chown _apt "$work" 2>/dev/null || true
  if ! (cd "$work" && apt-get download -q=2 "prometheus=$version"); then
    rm -rf "$work"
    die "apt-get download prometheus=$version failed"
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  rm -rf "${cache:?}"/*/  # older versions
  install -D -m 0755 "$work/root/usr/bin/promtool" "$bin"
  rm -rf "$work"
fi
exec "$bin" "$@"
