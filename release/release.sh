#!/usr/bin/env bash
# Cut release x.y.z up to the push (README "Releases"): check, tag, package, push the image.
# Uploading the Lambda zip and updating the stack stay manual; the script prints those commands.
#
# Usage: release/release.sh [--dry-run] [--registry HOST[/PATH]] x.y.z
#   --dry-run   check as usual, then print every command that would change something
#               (git tag, ./pants package, docker tag/push) with a `+ ` prefix instead of running it
#   --registry  where the image is pushed (default $RELEASE_REGISTRY); required unless --dry-run
# Run from the repository (any directory in it). Checks, before anything is changed:
#   x.y.z is a plain semver, the working tree is clean, CHANGELOG.md has a `## [x.y.z]` section,
#   and the tag x.y.z is new (or already on HEAD).
set -euo pipefail

die() { echo "release: $*" >&2; exit 1; }

dry_run=0
registry="${RELEASE_REGISTRY:-}"
version=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --registry) [[ $# -ge 2 ]] || die "--registry needs a value"; registry="$2"; shift ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "${version}" ]] || die "one version only"; version="$1" ;;
  esac
  shift
done

[[ -n "${version}" ]] || die "usage: release/release.sh [--dry-run] [--registry HOST] x.y.z"
[[ "${version}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "version must be x.y.z (got ${version})"
root="$(git rev-parse --show-toplevel 2>/dev/null)" || die "not inside a git repository"
cd "${root}"
[[ -z "$(git status --porcelain --untracked-files=no)" ]] \
  || die "the working tree has uncommitted changes; commit them first"
grep -q "^## \[${version//./\\.}\]" CHANGELOG.md \
  || die "CHANGELOG.md has no '## [${version}]' section; move the Unreleased entries into one"
if git rev-parse -q --verify "refs/tags/${version}" >/dev/null; then
  [[ "$(git rev-parse "${version}^{commit}")" == "$(git rev-parse HEAD)" ]] \
    || die "tag ${version} exists on another commit"
  tag_exists=1
else
  tag_exists=0
fi
if [[ -z "${registry}" && ${dry_run} -eq 0 ]]; then
  die "no registry: pass --registry HOST or set RELEASE_REGISTRY"
fi
registry="${registry:-REGISTRY}"

run() {  # run COMMAND...: run it, or print it in a dry run
  if [[ ${dry_run} -eq 1 ]]; then echo "+ $*"; else echo "+ $*" >&2; "$@"; fi
}

image="ses/relay"
zip="dist/services.blacklist_lambda/blacklist-lambda-${version}.zip"
[[ ${tag_exists} -eq 1 ]] || run git tag -a "${version}" -m "ses-relay ${version}"
run env SES_RELAY_VERSION="${version}" SES_RELAY_IMAGE_TAG="${version}" ./pants package \
  docker/relay:relay services/blacklist_lambda:lambda libs/ses_core:wheel services/relay:relay
for tag in "${version}" latest; do
  run docker tag "${image}:${tag}" "${registry}/${image}:${tag}"
  run docker push "${registry}/${image}:${tag}"
done
note=""
[[ ${dry_run} -eq 0 ]] || note=" (dry run: nothing was changed)"
cat <<NEXT
release ${version}: tagged, packaged and pushed${note}. Next, by hand:
  git push origin ${version}
  aws s3 cp ${zip} s3://\$CODE_BUCKET/blacklist-lambda-${version}.zip
  aws cloudformation deploy --stack-name \$STACK --template-file services/blacklist_lambda/template.yaml \\
    --capabilities CAPABILITY_IAM --parameter-overrides CodeS3Key=blacklist-lambda-${version}.zip
NEXT
