#!/usr/bin/env bash
# Builds the lab's base image: a bare Debian 12 that boots systemd and answers SSH.
#
#   lab/image/build.sh              debootstrap + docker import (no registry needed)
#   LAB_IMAGE_FROM=registry lab/image/build.sh   docker build FROM debian:bookworm
#
# The tag carries a hash of the recipe (this folder), so a second build with the same recipe
# reuses the first in a second and a changed recipe builds anew. The image is also tagged
# LAB_IMAGE (default webstack/bookworm-systemd:latest), the name the lab and molecule use.
# systemd stops cleanly on SIGRTMIN+3: `docker import` cannot record a STOPSIGNAL, so the
# lab sets it on every container it creates (lab/roles/lab_machines/tasks/present.yml).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
image=${LAB_IMAGE:-webstack/bookworm-systemd:latest}
repo=${image%:*}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
from=${LAB_IMAGE_FROM:-debootstrap}

die() { echo "build-image: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 \
  || die "the Docker engine does not answer; run scripts/host-setup.sh (installs and starts it)"

# One build at a time: the lab and molecule scenarios may all ask for the image at once.
exec 9>/var/lock/webstack-image-build.lock
flock 9

recipe=$(cat "$here/build.sh" "$here/customize.sh" "$here/packages.txt" "$here/Dockerfile" \
  | sha256sum | cut -c1-12)
if docker image inspect "$repo:$recipe" >/dev/null 2>&1; then
  docker tag "$repo:$recipe" "$image"
  echo "build-image: reusing $repo:$recipe (recipe unchanged) as $image"
  exit 0
fi

packages=$(grep -v '^#' "$here/packages.txt" | paste -sd, -)
start=$(date +%s)
case $from in
  debootstrap)
    command -v debootstrap >/dev/null \
      || die "debootstrap is not installed; run scripts/host-setup.sh"
    root=$(mktemp -d /var/tmp/webstack-rootfs.XXXXXX)
    log=$(mktemp /var/tmp/webstack-debootstrap.XXXXXX.log)
    trap 'rm -rf "$root"' EXIT
    echo "build-image: debootstrap bookworm from $mirror (about a minute; log: $log)"
    if ! debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" \
        >"$log" 2>&1; then
      tail -n 15 "$log" >&2
      die "debootstrap failed (full log: $log). Check that $mirror is reachable, or set DEBIAN_MIRROR to a mirror that is."
    fi
    cp "$here/customize.sh" "$root/customize.sh"
    chroot "$root" /bin/sh /customize.sh || die "customize.sh failed inside the new root"
    rm -f "$root/customize.sh" "$log"
    tar -C "$root" --numeric-owner -c . \
      | docker import \
          --change 'ENV container=docker' \
          --change 'CMD ["/lib/systemd/systemd"]' \
          - "$repo:$recipe" >/dev/null \
      || die "docker import failed"
    ;;
  registry)
    docker build --build-arg "PACKAGES=${packages//,/ }" -t "$repo:$recipe" "$here" \
      || die "docker build FROM debian:bookworm failed (is a registry reachable?)"
    ;;
  *) die "LAB_IMAGE_FROM must be debootstrap or registry, not '$from'" ;;
esac
docker tag "$repo:$recipe" "$image"
# Images of earlier recipes are dead weight once the new one is tagged.
docker image ls --format '{{.Repository}}:{{.Tag}}' "$repo" \
  | grep -v -e ":$recipe\$" -e ":${image##*:}\$" | xargs -r docker rmi >/dev/null 2>&1 || true
echo "build-image: built $repo:$recipe as $image in $(( $(date +%s) - start ))s"
