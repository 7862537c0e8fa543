#!/usr/bin/env bash
# Smoke-test the built relay image without a container runtime (this sandbox cannot run
# containers): create a container (never started) and mount its writable filesystem, so the image
# itself stays untouched, start its entrypoint under chroot as the image's user
# with the image's environment and working directory, then check /healthz answers and that a mail
# sent over SMTP lands in the outbox (local mode). Loopback only; bounded waits.
# Usage: docker/check-image.sh [image]   (default localhost/ses/relay:latest)
set -euo pipefail
image="${1:-localhost/ses/relay:latest}"
store=(--storage-driver=vfs)
[[ -n "${PODMAN_ROOT:-}" ]] && store+=(--root="${PODMAN_ROOT}")
smtp_port=$(( 20000 + RANDOM % 20000 )); metrics_port=$(( smtp_port + 1 ))

container="$(podman "${store[@]}" create "${image}")"
mnt="$(podman "${store[@]}" mount "${container}")"
pid=""
cleanup() {
  [[ -n "${pid}" ]] && kill -TERM "${pid}" 2>/dev/null && wait "${pid}" 2>/dev/null || true
  podman "${store[@]}" umount "${container}" >/dev/null 2>&1 || true
  podman "${store[@]}" rm -f "${container}" >/dev/null 2>&1 || true
}
trap cleanup EXIT

user="$(podman "${store[@]}" image inspect --format '{{.Config.User}}' "${image}")"
workdir="$(podman "${store[@]}" image inspect --format '{{.Config.WorkingDir}}' "${image}")"
mapfile -t image_env < <(podman "${store[@]}" image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "${image}" | sed '/^$/d')
entrypoint="$(podman "${store[@]}" image inspect --format '{{index .Config.Entrypoint 0}}' "${image}")"
echo "check-image: ${image} user=${user} workdir=${workdir} entrypoint=${entrypoint}"

# The image's own environment, with the listeners moved to loopback ports for this check.
chroot --userspec="${user}:${user}" "${mnt}" /usr/bin/env -i "${image_env[@]}" \
  SMTP_HOST=127.0.0.1 SMTP_PORT="${smtp_port}" \
  RELAY_METRICS_HOST=127.0.0.1 RELAY_METRICS_PORT="${metrics_port}" \
  /bin/sh -c "cd '${workdir}' && exec '${entrypoint}'" &
pid=$!

python3 - "${smtp_port}" "${metrics_port}" "${mnt}" <<'PY'
import pathlib, smtplib, sys, time, urllib.request
smtp_port, metrics_port, root = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
deadline = time.monotonic() + 30
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=2).read()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("check-image: /healthz never answered")
        time.sleep(0.3)
with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
    client.sendmail("app@example.com", ["someone@example.org"],
                    b"Subject: image check\r\nMessage-ID: <image-check@example.com>\r\n\r\nhi\r\n")
outbox = root / "var/lib/ses-relay/outbox"
while not any(outbox.glob("*.eml")):
    if time.monotonic() > deadline:
        sys.exit(f"check-image: no .eml in {outbox}")
    time.sleep(0.2)
print(f"check-image: /healthz ok, mail delivered to {outbox}")
PY
