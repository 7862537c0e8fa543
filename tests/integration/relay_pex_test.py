"""The packaged relay PEX itself: the server and every operator tool the README names.

Unit tests exercise the sources; this test runs what ships. It takes the PEX Pants built
(`./pants package services/relay:relay` writes `dist/services.relay/relay.pex`; as a
`runtime_package_dependencies` of this test it appears at `services.relay/relay.pex` in the
test's working directory), or the path in `RELAY_PEX`. A missing PEX is a failure, never a skip.

Each command runs in a clean environment (no PYTHONPATH, no inherited AWS or relay settings), so a
module missing from the PEX fails here as it would for an operator (`No module named ...`).
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.auth import DynamoDBApiKeys, api_key_digest, verify_password
from ses_core.testing.moto_dynamodb import TEST_REGION, MotoServer, create_api_key_table
from ses_core.testing.ports import free_port, wait_until_accepting

PEX_CANDIDATES = (Path("services.relay/relay.pex"), Path("dist/services.relay/relay.pex"))
TIMEOUT = 120
SECRET = "s3cret-for-the-pex"


def find_pex() -> Path:
    """The packaged PEX: $RELAY_PEX, else the Pants output path relative to the working dir."""
    explicit = os.environ.get("RELAY_PEX")
    if explicit:
        path = Path(explicit)
        assert path.is_file(), f"RELAY_PEX={explicit} is not a file"
        return path.resolve()
    for candidate in PEX_CANDIDATES:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(Path.cwd() / candidate) for candidate in PEX_CANDIDATES)
    pytest.fail(
        f"the packaged relay PEX was not found (tried {tried}). Run `./pants package "
        "services/relay:relay` or set RELAY_PEX; under `./pants test` the PEX comes from this "
        "test's runtime_package_dependencies."
    )


@pytest.fixture(scope="module")
def pex(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(the PEX, a PEX_ROOT of this module's own, so no test depends on ~/.pex)."""
    yield find_pex(), tmp_path_factory.mktemp("pex-root")


def clean_env(pex_root: Path, home: Path, **extra: str) -> dict[str, str]:
    """Only PATH, a private HOME/PEX_ROOT, no AWS config files, and `extra`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PEX_ROOT": str(pex_root),
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.update(extra)
    return env


def run_pex(
    pex: tuple[Path, Path], home: Path, args: list[str], *, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    path, root = pex
    return subprocess.run(
        [sys.executable, str(path), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env(root, home, **env),
        cwd=home,
        timeout=TIMEOUT,
        check=False,
    )


def test_help_lists_the_commands(pex: tuple[Path, Path], tmp_path: Path) -> None:
    """`relay --help` names every subcommand and exits 0."""
    result = run_pex(pex, tmp_path, ["--help"])
    assert result.returncode == 0, result.stderr
    for command in ("serve", "hash-password", "api-key", "check-config"):
        assert command in result.stdout


def test_hash_password_from_stdin(pex: tuple[Path, Path], tmp_path: Path) -> None:
    """`relay hash-password app` prints an entry RELAY_AUTH_USERS accepts."""
    result = run_pex(pex, tmp_path, ["hash-password", "app"], stdin=SECRET + "\n")
    assert result.returncode == 0, result.stderr
    user, hashed = result.stdout.strip().split(":", 1)
    assert user == "app" and verify_password(SECRET, hashed)
    check = run_pex(pex, tmp_path, ["check-config"], RELAY_AUTH_USERS=result.stdout.strip())
    assert check.returncode == 2  # AUTH needs TLS: the hash itself was accepted
    assert "SSL_CERT_PATH" in check.stderr and hashed not in check.stderr


def test_check_config_masks_secrets(pex: tuple[Path, Path], tmp_path: Path) -> None:
    """`relay check-config` with compose-like settings: exit 0, settings shown, secrets not."""
    result = run_pex(
        pex,
        tmp_path,
        ["check-config"],
        AWS_SMTP_HOST="email-smtp.eu-west-1.amazonaws.com",
        AWS_SMTP_USERNAME="AKIAEXAMPLE",
        AWS_SMTP_PASSWORD=SECRET,
        SES_RATE_LIMIT="14",
        REDIS_URL=f"redis://:{SECRET}@redis:6379/0",
        USE_BLACKLIST="true",
        DYNAMODB_TABLE="ses-blacklist",
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "blacklist DynamoDB table ses-blacklist, delivery queue" in lines[0]
    assert "AWS_SMTP_PASSWORD=****" in lines and "REDIS_URL=redis://:****@redis:6379/0" in lines


def test_check_config_error_is_one_line_exit_2(pex: tuple[Path, Path], tmp_path: Path) -> None:
    """Two blacklist stores: exit 2, one line naming both variables, no traceback."""
    result = run_pex(
        pex,
        tmp_path,
        ["check-config"],
        USE_BLACKLIST="true",
        DYNAMODB_TABLE="ses-blacklist",
        RELAY_BLACKLIST_SQLITE=str(tmp_path / "bl.sqlite3"),
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "RELAY_BLACKLIST_SQLITE" in line and "DYNAMODB_TABLE" in line


def test_api_key_create_against_moto(
    pex: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay api-key create keys --user svc` stores only the digest in the table (moto)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    with MotoServer() as server:
        server.reset()
        client = server.client()
        create_api_key_table(client, "keys")
        result = run_pex(
            pex,
            tmp_path,
            ["api-key", "create", "keys", "--user", "svc"],
            AWS_ENDPOINT_URL=server.endpoint_url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=TEST_REGION,
        )
        assert result.returncode == 0, result.stderr
        key = result.stdout.strip()
        [item] = client.scan(TableName="keys")["Items"]
        assert item["api_key"]["S"] == api_key_digest(key) != key
        record = DynamoDBApiKeys("keys", client=client).lookup(key)
        assert record is not None and record.username == "svc"


@pytest.mark.parametrize("args", [[], ["serve"]])
def test_no_command_and_serve_run_the_relay(
    pex: tuple[Path, Path], tmp_path: Path, args: list[str]
) -> None:
    """`relay` and `relay serve` start the server (local mode); SIGTERM stops it with 0."""
    path, root = pex
    port = free_port()
    env = clean_env(root, tmp_path, SMTP_PORT=str(port), RELAY_METRICS_PORT="off")
    with open(tmp_path / "relay.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(path), *args], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
        try:
            wait_until_accepting(port, timeout=60, alive=lambda: process.poll() is None)
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.sendmail(
                    "app@example.com", ["you@example.org"], b"Subject: pex\r\n\r\nhi\r\n"
                )
            # Queue mode (the default): the 250 means "in ./spool"; the .eml follows.
            deadline = time.monotonic() + 30
            while not any((tmp_path / "outbox").glob("*.eml")) and time.monotonic() < deadline:
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    assert b"blacklist: SQLite file" in (tmp_path / "relay.log").read_bytes()
