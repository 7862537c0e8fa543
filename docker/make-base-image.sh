#!/usr/bin/env bash
# One-off machine setup where no container registry is reachable but a Debian mirror is: build a
# Debian 12 image (python3 == 3.11) into podman's vfs store, for docker/relay/Dockerfile's
# BASE_IMAGE build arg. Needs root, debootstrap and podman (apt-get install debootstrap podman).
# Usage: docker/make-base-image.sh [image-name]   (default localhost/debian-python:3.11)
set -euo pipefail
image="${1:-localhost/debian-python:3.11}"
store=(--storage-driver=vfs)
[[ -n "${PODMAN_ROOT:-}" ]] && store+=(--root="${PODMAN_ROOT}")
[[ -n "${PODMAN_RUNROOT:-}" ]] && store+=(--runroot="${PODMAN_RUNROOT}")
if podman "${store[@]}" image exists "${image}"; then
  echo "make-base-image: ${image} already present"
  exit 0
fi
rootfs="$(mktemp -d)"
chmod 0755 "${rootfs}"   # mktemp makes it 0700, which would become the image's / and lock out non-root users
trap 'rm -rf "${rootfs}"' EXIT
debootstrap --variant=minbase --include=python3 bookworm "${rootfs}" \
  "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
tar -C "${rootfs}" -c . | podman "${store[@]}" import --change 'CMD ["/bin/bash"]' - "${image}"
