#!/usr/bin/env bash
# Smoke-test the built relay image without a container runtime (this sandbox cannot run
# containers): create a container (never started) and mount its writable filesystem, so the image
# itself stays untouched, and run its entrypoint under chroot as the image's user with the image's
# environment and working directory. Loopback only; every wait is bounded. Three checks:
#  1. local mode (the image's ENV alone): /healthz answers, a mail lands in the outbox, and the
#     log names the local SQLite blacklist;
#  2. docker/compose.yaml's settings, with what cannot exist here (AWS_SMTP_HOST, REDIS_URL,
#     DynamoDB) pointed at loopback stand-ins run on the host (the STARTTLS+AUTH upstream with a
#     throw-away CA the relay trusts through RELAY_UPSTREAM_CA_FILE, a real redis-server, moto with
#     compose's blacklist table holding one address): /readyz is 200, the blacklisted RCPT gets
#     `550 5.1.1`, another recipient is relayed with 250, the log names the DynamoDB table;
#  3. the operator tools in the image: `hash-password` and `check-config` (a RELAY_SPOOL_DIR the
#     user sets wins over the image's);
#  4. the spool directory of the image: owned by the relay user, mode 0700 (message bodies).
# The stand-ins are the PEX `./pants package ::` builds (tests/support:image-standins), run with
# the host's python3.11 (PATH or pyenv); STANDINS_PEX overrides its path.
# Usage: docker/check-image.sh [image]   (default localhost/ses/relay:latest)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
image="${1:-localhost/ses/relay:latest}"
store=(--storage-driver=vfs)
[[ -n "${PODMAN_ROOT:-}" ]] && store+=(--root="${PODMAN_ROOT}")
standins_pex="${STANDINS_PEX:-dist/tests.support/image-standins.pex}"
py311="$(command -v python3.11 || ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3.11 2>/dev/null | head -n1 || true)"
[[ -f "${standins_pex}" ]] || { echo "check-image: ${standins_pex} missing (./pants package tests/support:image-standins)" >&2; exit 1; }
[[ -n "${py311}" ]] || { echo "check-image: no python3.11 on PATH or in pyenv for the stand-ins" >&2; exit 1; }

container="$(podman "${store[@]}" create "${image}")"
mnt="$(podman "${store[@]}" mount "${container}")"
work="$(mktemp -d)"
pids=()
stop_all() {  # TERM every process started here, newest first, and wait for it (bounded)
  local i
  for (( i=${#pids[@]}-1; i>=0; i-- )); do
    kill -TERM "${pids[i]}" 2>/dev/null || continue
    timeout 30 tail --pid="${pids[i]}" -f /dev/null 2>/dev/null || kill -KILL "${pids[i]}" 2>/dev/null || true
  done
  pids=()
}
cleanup() {
  stop_all
  podman "${store[@]}" umount "${container}" >/dev/null 2>&1 || true
  podman "${store[@]}" rm -f "${container}" >/dev/null 2>&1 || true
  rm -rf "${work}"
}
trap cleanup EXIT
fail() {  # fail MESSAGE [LOG...]: print the message and the tails of the logs, exit 1
  echo "check-image: FAIL: $1" >&2; shift
  local log; for log in "$@"; do echo "--- ${log}" >&2; tail -n 30 "${log}" >&2 || true; done
  exit 1
}

user="$(podman "${store[@]}" image inspect --format '{{.Config.User}}' "${image}")"
workdir="$(podman "${store[@]}" image inspect --format '{{.Config.WorkingDir}}' "${image}")"
mapfile -t image_env < <(podman "${store[@]}" image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "${image}" | sed '/^$/d')
entrypoint="$(podman "${store[@]}" image inspect --format '{{index .Config.Entrypoint 0}}' "${image}")"
echo "check-image: ${image} user=${user} workdir=${workdir} entrypoint=${entrypoint}"
# Never `producer | grep -q` under pipefail: grep exits at its first match, the producer's next write
# then dies of SIGPIPE, and the pipeline fails at random (podman inspect did, about 1 run in 20).
[[ $'\n'"$(printf '%s\n' "${image_env[@]}")" == *$'\n'RELAY_BLACKLIST_SQLITE=* ]] \
  && fail "the image's ENV sets RELAY_BLACKLIST_SQLITE: it would shadow compose's DynamoDB table"

exec_image() {  # exec_image [VAR=value...] -- [ARG...]: become the entrypoint (image env + VARs)
  local vars=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do vars+=("$1"); shift; done
  [[ $# -gt 0 ]] && shift
  exec chroot --userspec="${user}:${user}" "${mnt}" /usr/bin/env -i "${image_env[@]}" "${vars[@]}" \
    /bin/sh -c 'cd "$0" && exec "$@"' "${workdir}" "${entrypoint}" "$@"
}
in_image() { ( exec_image "$@" ); }   # in the foreground: the relay replaces a subshell only
start_image() {  # start_image LOG ARGS...: in the background; its pid (the relay's own) in pids
  local log=$1; shift
  exec_image "$@" >"${log}" 2>&1 &
  pids+=($!)
}
loopback_listeners() {  # the listeners moved to loopback ports for this check
  local smtp_port=$1
  echo "SMTP_HOST=127.0.0.1" "SMTP_PORT=${smtp_port}" \
    "RELAY_METRICS_HOST=127.0.0.1" "RELAY_METRICS_PORT=$(( smtp_port + 1 ))"
}

# --- 1. local mode: the image's own environment --------------------------------------------------
smtp_port=$(( 20000 + RANDOM % 20000 ))
# shellcheck disable=SC2046
start_image "${work}/local.log" $(loopback_listeners "${smtp_port}") --
python3 - "${smtp_port}" "${mnt}" <<'PY' || fail "local mode" "${work}/local.log"
import pathlib, smtplib, sys, time, urllib.request
smtp_port, root = int(sys.argv[1]), pathlib.Path(sys.argv[2])
deadline = time.monotonic() + 60
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{smtp_port + 1}/healthz", timeout=2).read()
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
print(f"check-image: local mode: /healthz ok, mail delivered to {outbox}")
PY
stop_all
grep -q 'blacklist: SQLite file blacklist.sqlite3' "${work}/local.log" \
  || fail "local mode did not log its SQLite blacklist" "${work}/local.log"

# --- 2. compose's settings against loopback stand-ins --------------------------------------------
mkdir -p "${mnt}/tmp/check-image"
"${py311}" "${standins_pex}" --dir "${mnt}/tmp/check-image" --compose docker/compose.yaml \
  --ca-file-as-seen /tmp/check-image/ca.pem >"${work}/standins.json" 2>"${work}/standins.log" &
pids+=($!)
for _ in $(seq 600); do   # up to 120 s: the first run unpacks the PEX
  [[ -s "${work}/standins.json" ]] && break
  kill -0 "${pids[-1]}" 2>/dev/null || fail "the stand-ins stopped" "${work}/standins.log"
  sleep 0.2
done
[[ -s "${work}/standins.json" ]] || fail "the stand-ins never reported their ports" "${work}/standins.log"
mapfile -t compose_env < <(python3 -c 'import json, sys
for key, value in json.load(open(sys.argv[1]))["environment"].items():
    print(f"{key}={value}")' "${work}/standins.json")
blacklisted="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["blacklisted"])' "${work}/standins.json")"

smtp_port=$(( 20000 + RANDOM % 20000 ))
# shellcheck disable=SC2046
start_image "${work}/compose.log" "${compose_env[@]}" $(loopback_listeners "${smtp_port}") --
python3 - "${smtp_port}" "${blacklisted}" <<'PY' || fail "compose settings" "${work}/compose.log" "${work}/standins.log"
import smtplib, sys, time, urllib.error, urllib.request
smtp_port, blacklisted = int(sys.argv[1]), sys.argv[2]
deadline = time.monotonic() + 60
while True:  # ready = the upstream answers NOOP, Redis PONG, the DynamoDB table reads
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{smtp_port + 1}/readyz", timeout=5).read()
        break
    except (OSError, urllib.error.HTTPError):
        if time.monotonic() > deadline:
            sys.exit("check-image: /readyz never answered 200")
        time.sleep(0.3)
with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
    client.ehlo()
    client.mail("app@example.com")
    code, text = client.rcpt(blacklisted)
    if code != 550 or not text.startswith(b"5.1.1"):
        sys.exit(f"check-image: blacklisted RCPT got {code} {text!r}, expected 550 5.1.1")
    code, text = client.rcpt("someone@example.org")
    if code != 250:
        sys.exit(f"check-image: RCPT got {code} {text!r}")
    code, text = client.data(b"Subject: compose check\r\nMessage-ID: <compose@example.com>\r\n\r\nhi\r\n")
    if code != 250:  # queue mode (compose's default): 250 once the message is in the spool
        sys.exit(f"check-image: DATA got {code} {text!r}, expected 250")
print(f"check-image: compose settings: /readyz ok, {blacklisted} refused with 550 5.1.1, "
      "another recipient relayed through STARTTLS+AUTH")
PY
grep -q 'blacklist: DynamoDB table ses-blacklist' "${work}/compose.log" \
  || fail "the relay did not log the DynamoDB blacklist" "${work}/compose.log"

# --- 3. the operator tools, inside the image -----------------------------------------------------
entry="$(printf 'image-check-pw\n' | in_image -- hash-password app 2>"${work}/tools.log")" \
  || fail "hash-password" "${work}/tools.log"
[[ "${entry}" == app:scrypt\$* ]] || fail "hash-password printed ${entry:0:20}..."
status=0   # the image's ENV alone listens on 0.0.0.0 with no allowlist: refused, as `relay` would be
in_image -- check-config >/dev/null 2>"${work}/check-open.txt" || status=$?
[[ ${status} -eq 2 ]] && grep -q '^configuration error: SMTP_HOST: .*open relay' "${work}/check-open.txt" \
  || fail "check-config with the image's ENV alone: exit ${status}" "${work}/check-open.txt"
in_image RELAY_ALLOWED_NETWORKS=10.0.0.0/8 -- check-config >"${work}/check-local.txt" 2>>"${work}/tools.log" \
  || fail "check-config (local mode)" "${work}/tools.log"
[[ "$(head -n1 "${work}/check-local.txt")" == 'configuration ok: local mode, blacklist SQLite file'* ]] \
  || fail "check-config (local mode) output" "${work}/check-local.txt"
in_image "${compose_env[@]}" -- check-config >"${work}/check-compose.txt" 2>>"${work}/tools.log" \
  || fail "check-config (compose settings)" "${work}/tools.log"
grep -q '^configuration ok: upstream 127.0.0.1, blacklist DynamoDB table ses-blacklist, delivery queue, spool /var/lib/ses-relay/spool ' "${work}/check-compose.txt" \
  && grep -qx 'AWS_SMTP_PASSWORD=\*\*\*\*' "${work}/check-compose.txt" \
  && ! grep -q 'test-smtp-password' "${work}/check-compose.txt" \
  || fail "check-config (compose settings) output" "${work}/check-compose.txt"
status=0
in_image USE_BLACKLIST=true DYNAMODB_TABLE=ses-blacklist RELAY_BLACKLIST_SQLITE=/tmp/bl.sqlite3 \
  -- check-config >/dev/null 2>"${work}/check-both.txt" || status=$?
[[ ${status} -eq 2 && $(wc -l <"${work}/check-both.txt") -eq 1 ]] \
  && grep -q 'RELAY_BLACKLIST_SQLITE.*DYNAMODB_TABLE' "${work}/check-both.txt" \
  || fail "check-config with two blacklist stores: exit ${status}" "${work}/check-both.txt"
in_image RELAY_ALLOWED_NETWORKS=10.0.0.0/8 RELAY_SPOOL_DIR=/tmp/user-spool -- check-config \
  >"${work}/check-spool.txt" 2>>"${work}/tools.log" || fail "check-config (user's spool)" "${work}/tools.log"
grep -qx 'RELAY_SPOOL_DIR=/tmp/user-spool' "${work}/check-spool.txt" \
  || fail "the image's RELAY_SPOOL_DIR overrode the user's" "${work}/check-spool.txt"
grep -qx 'RELAY_SPOOL_DIR=/var/lib/ses-relay/spool' "${work}/check-local.txt" \
  || fail "the image's ENV does not set RELAY_SPOOL_DIR=/var/lib/ses-relay/spool" "${work}/check-local.txt"
echo "check-image: tools: hash-password and check-config work in the image (secrets masked)"

# --- 4. the spool directory ----------------------------------------------------------------------
relay_uid="$(awk -F: -v u="${user}" '$1 == u {print $3}' "${mnt}/etc/passwd")"
[[ -n "${relay_uid}" ]] || fail "no ${user} in the image's /etc/passwd"
read -r spool_uid spool_mode < <(stat -c '%u %a' "${mnt}/var/lib/ses-relay/spool") \
  || fail "the image has no /var/lib/ses-relay/spool"
[[ "${spool_uid}" == "${relay_uid}" && "${spool_mode}" == "700" ]] \
  || fail "/var/lib/ses-relay/spool is uid ${spool_uid} mode ${spool_mode}, expected ${relay_uid} 700"
volumes="$(podman "${store[@]}" image inspect --format '{{range $k, $v := .Config.Volumes}}{{println $k}}{{end}}' "${image}")"
grep -qx '/var/lib/ses-relay/spool' <<<"${volumes}" || fail "the image does not declare VOLUME /var/lib/ses-relay/spool"
echo "check-image: spool: /var/lib/ses-relay/spool owned by ${user}, mode 0700, a volume"
stop_all
echo "check-image: all checks passed"
