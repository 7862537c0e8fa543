#!/usr/bin/env bash
# Security scan of the Kubernetes manifests, as CI runs it (.ci/run) and as anyone can locally:
#   deploy/check-kubernetes.sh
# 1. makes (once, cached) a virtualenv of its own with pinned checkov and kubernetes-validate:
#    checkov's many dependencies must never enter the project's lockfile;
# 2. renders every overlay with `kubectl kustomize`, from a scratch copy whose secrets/*.env are
#    the committed *.env.example templates (real secrets are never read);
# 3. validates every core object offline against the Kubernetes schemas (strict);
# 4. scans the rendered objects with checkov (offline) and fails on any failed check, and on any
#    accepted one (a `checkov.io/skip` annotation) that docs/runbooks.md "Security scan" does not
#    explain.
# Needs python3.11 and kubectl (with kustomize) on PATH. Exit status 0 only if all of it passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSIONS=(1.29.0 1.37.0)
OVERLAYS=(single-local-spool replicas-sqs)
venv="${SES_RELAY_TOOLS_CACHE:-${HOME:-/tmp}/.cache/ses-relay}/k8s-tools-${CHECKOV_VERSION}-${KUBERNETES_VALIDATE_VERSION}"

command -v kubectl >/dev/null || { echo "kubectl (with kustomize) is not on PATH" >&2; exit 2; }
if [[ ! -x "${venv}/bin/checkov" || ! -x "${venv}/bin/kubernetes-validate" ]]; then
  rm -rf "${venv}"
  python3.11 -m venv "${venv}"
  "${venv}/bin/pip" install --quiet --disable-pip-version-check \
    "checkov==${CHECKOV_VERSION}" "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
cp -r deploy/kubernetes "${work}/kubernetes"
find "${work}/kubernetes" -path '*/secrets/*.env' -delete
while IFS= read -r template; do cp "${template}" "${template%.example}"; done \
  < <(find "${work}/kubernetes" -name '*.env.example')

failed=0
for overlay in "${OVERLAYS[@]}"; do
  rendered="${work}/${overlay}.yaml"
  kubectl kustomize "${work}/kubernetes/overlays/${overlay}" > "${rendered}"
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    # Custom resources (ServiceMonitor, PrometheusRule) have no bundled schema (not warned about
    # here): tests/deploy/kubernetes_test.py checks their fields.
    "${venv}/bin/kubernetes-validate" --strict --quiet --no-warn --kubernetes-version "${version}" "${rendered}" \
      || { echo "FAIL: ${overlay} does not validate against Kubernetes ${version}"; failed=1; }
  done
  # BC_SKIP_MAPPING and --skip-download: checkov stays offline.
  if ! BC_SKIP_MAPPING=TRUE "${venv}/bin/checkov" --compact --skip-download \
      --framework kubernetes --file "${rendered}" --output json > "${work}/${overlay}.json"; then
    echo "FAIL: checkov found failed checks in ${overlay}:"
    BC_SKIP_MAPPING=TRUE "${venv}/bin/checkov" --quiet --compact --skip-download \
      --framework kubernetes --file "${rendered}" || true
    failed=1
  fi
  "${venv}/bin/python" - "${work}/${overlay}.json" docs/runbooks.md "${overlay}" <<'PY' || failed=1
import json, sys
report = json.load(open(sys.argv[1]))
reports = report if isinstance(report, list) else [report]
docs = open(sys.argv[2], encoding="utf-8").read()
section = docs[docs.index("## Security scan"):]
summary = {key: sum(r["summary"][key] for r in reports) for key in ("passed", "failed", "skipped")}
skipped = sorted({c["check_id"] for r in reports for c in r["results"]["skipped_checks"]})
unexplained = [check for check in skipped if f"`{check}`" not in section]
print(f"{sys.argv[3]}: checkov passed {summary['passed']}, failed {summary['failed']},"
      f" accepted {summary['skipped']} ({', '.join(skipped) or 'none'})")
if unexplained:
    print(f"FAIL: accepted but not explained in docs/runbooks.md 'Security scan': {unexplained}")
    sys.exit(1)
PY
done
if [[ ${failed} -ne 0 ]]; then exit 1; fi
echo "kubernetes manifests: rendered, validated and scanned: ok"
