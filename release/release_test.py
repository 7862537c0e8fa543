"""`release/version.sh` and `release/release.sh --dry-run`, run in throwaway git repositories.

Nothing here reaches the network or this checkout: each test makes its own repository under
tmp_path, and the dry run only prints the commands that would tag, package and push.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
VERSION_SH = HERE / "version.sh"
RELEASE_SH = HERE / "release.sh"
TIMEOUT = 30
GIT = shutil.which("git") or "/usr/bin/git"
ENV = {
    "PATH": f"{Path(GIT).parent}:/usr/bin:/bin",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "Release Test",
    "GIT_AUTHOR_EMAIL": "release@example.com",
    "GIT_COMMITTER_NAME": "Release Test",
    "GIT_COMMITTER_EMAIL": "release@example.com",
}
CHANGELOG = "# Changelog\n\n## [Unreleased]\n\n## [1.2.0] - 2026-12-03\n- first release\n"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        [GIT, "-C", str(repo), *args],
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit holding a CHANGELOG.md that has a 1.2.0 section."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "CHANGELOG.md").write_text(CHANGELOG, encoding="utf-8")
    git(root, "add", "CHANGELOG.md")
    git(root, "commit", "-q", "-m", "initial")
    return root


def run(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_untagged_commit_gets_the_development_versions(repo: Path) -> None:
    sha = git(repo, "rev-parse", "--short=7", "HEAD")
    assert run(VERSION_SH, str(repo), cwd=repo).stdout == f"0.0.0.dev0+g{sha} 0.0.0-g{sha}\n"


def test_semver_tag_on_head_is_the_version_other_tags_are_not(repo: Path) -> None:
    git(repo, "tag", "v9", "HEAD")
    git(repo, "tag", "nightly", "HEAD")
    assert run(VERSION_SH, str(repo), cwd=repo).stdout.startswith("0.0.0.dev0+g")
    git(repo, "tag", "1.2.0", "HEAD")
    assert run(VERSION_SH, str(repo), cwd=repo).stdout == "1.2.0 1.2.0\n"
    (repo / "x").write_text("x", encoding="utf-8")
    git(repo, "add", "x")
    git(repo, "commit", "-q", "-m", "after the release")
    assert run(VERSION_SH, str(repo), cwd=repo).stdout.startswith("0.0.0.dev0+g")


def test_no_git_repository_gives_an_unknown_development_version(tmp_path: Path) -> None:
    result = run(VERSION_SH, str(tmp_path), cwd=tmp_path)
    assert result.stdout == "0.0.0.dev0+gunknown 0.0.0-gunknown\n"


def test_dry_run_prints_tag_package_and_push_and_changes_nothing(repo: Path) -> None:
    result = run(RELEASE_SH, "--dry-run", "--registry", "registry.example/team", "1.2.0", cwd=repo)
    assert result.returncode == 0, result.stderr
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0] == "git tag -a 1.2.0 -m ses-relay 1.2.0"
    assert commands[1].startswith(
        "env SES_RELAY_VERSION=1.2.0 SES_RELAY_IMAGE_TAG=1.2.0 ./pants package docker/relay:relay "
        "services/blacklist_lambda:lambda libs/ses_core:wheel"
    )
    assert commands[2:] == [
        "docker tag ses/relay:1.2.0 registry.example/team/ses/relay:1.2.0",
        "docker push registry.example/team/ses/relay:1.2.0",
        "docker tag ses/relay:latest registry.example/team/ses/relay:latest",
        "docker push registry.example/team/ses/relay:latest",
    ]
    assert "dist/services.blacklist_lambda/blacklist-lambda-1.2.0.zip" in result.stdout
    assert "CodeS3Key=blacklist-lambda-1.2.0.zip" in result.stdout
    assert git(repo, "tag") == ""  # nothing was tagged


@pytest.mark.parametrize(
    ("change", "version", "message"),
    [
        (None, "1.2", "version must be x.y.z"),
        (None, "1.3.0", "CHANGELOG.md has no '## [1.3.0]' section"),
        ("dirty", "1.2.0", "uncommitted changes"),
        ("tag-elsewhere", "1.2.0", "tag 1.2.0 exists on another commit"),
    ],
)
def test_refuses_what_would_make_a_bad_release(
    repo: Path, change: str | None, version: str, message: str
) -> None:
    if change == "dirty":
        (repo / "CHANGELOG.md").write_text(CHANGELOG + "- more\n", encoding="utf-8")
    if change == "tag-elsewhere":
        git(repo, "tag", "1.2.0", "HEAD")
        git(repo, "commit", "-q", "--allow-empty", "-m", "later")
    result = run(RELEASE_SH, "--dry-run", version, cwd=repo)
    assert result.returncode == 1
    assert message in result.stderr
    assert "+ " not in result.stdout


def test_a_real_run_needs_a_registry(repo: Path) -> None:
    result = run(RELEASE_SH, "1.2.0", cwd=repo)
    assert result.returncode == 1
    assert "no registry" in result.stderr
    assert git(repo, "tag") == ""
