#!/usr/bin/env bash
# The repository's one version (issue 19), printed as two words: the Python version, then the
# image tag. HEAD tagged `x.y.z` gives `x.y.z x.y.z`; anything else `0.0.0.dev0+g<sha>
# 0.0.0-g<sha>` (PEP 440 local version for wheels; image tags do not allow `+`).
# Usage: release/version.sh [git-dir]  (default: this checkout). No git or no commit: `gunknown`.
set -euo pipefail
dir="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
tag=""
while read -r candidate; do
  if [[ "${candidate}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then tag="${candidate}"; break; fi
done < <(git -C "${dir}" tag --points-at HEAD 2>/dev/null | sort -t. -k1,1nr -k2,2nr -k3,3nr)
if [[ -n "${tag}" ]]; then
  echo "${tag} ${tag}"
else
  sha="$(git -C "${dir}" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)"
  echo "0.0.0.dev0+g${sha} 0.0.0-g${sha}"
fi
