#!/usr/bin/env bash
# Build the local base image deploykit/base:bookworm without any container registry:
# debootstrap a minimal Debian bookworm from the apt mirror and `docker import` it.
# Idempotent: does nothing when the image already exists (FORCE=1 rebuilds).
set -euo pipefail
IMAGE=${IMAGE:-deploykit/base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists"; exit 0
fi
DIR=$(mktemp -d /var/tmp/deploykit-rootfs.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
start=$(date +%s)
# debootstrap prints ~570 lines of package chatter: keep it in a log, show its tail on failure.
LOG=${DEBOOTSTRAP_LOG:-/var/tmp/deploykit-debootstrap.log}
echo "debootstrap $SUITE from $MIRROR (log: $LOG)"
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$DIR" "$MIRROR" \
    >"$LOG" 2>&1; then
  tail -30 "$LOG" >&2; echo "debootstrap failed; full log: $LOG" >&2; exit 1
fi
# Keep the image small and make apt inside it work like in the official debian image.
rm -rf "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/*
echo "deb $MIRROR $SUITE main" >"$DIR/etc/apt/sources.list"
tar -C "$DIR" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' -c 'CMD ["/bin/bash"]' - "$IMAGE"
echo "built $IMAGE in $(( $(date +%s) - start )) s"
