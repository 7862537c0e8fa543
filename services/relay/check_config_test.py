"""Unit tests for `relay check-config`: start-up's checks, every setting shown, secrets masked."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from relay.auth import hash_password
from relay.check_config import check_config, effective_settings, mask_url
from relay.config import RelayConfig
from relay.variables import VARIABLES
from ses_core.testing.certs import TestCertificates

SECRET = "pa55-w0rd-xyz"


def run(environ: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    status = check_config(environ, out=out)
    return status, out.getvalue()


def test_local_defaults_are_ok_and_every_variable_is_shown() -> None:
    """An empty environment is valid (local mode) and each variable has one line, in order."""
    status, text = run({})
    assert status == 0
    first, *lines = text.splitlines()
    assert first.startswith(
        "configuration ok: local mode, blacklist SQLite file blacklist.sqlite3, delivery queue,"
        " spool spool ("
    )
    assert [line.split("=", 1)[0] for line in lines] == [v.name for v in VARIABLES]
    assert "SMTP_HOST=127.0.0.1" in lines and "RELAY_GRACE_PERIOD=90" in lines


def test_every_known_variable_has_a_real_value() -> None:
    """No variable falls back to `(not shown)`: check-config knows them all."""
    assert [n for n, value in effective_settings(RelayConfig()) if value == "(not shown)"] == []


def test_secrets_are_masked(tmp_path: Path) -> None:
    """The SES password, AUTH hashes and passwords in Redis/SMTP URLs never appear."""
    certs = TestCertificates.create(str(tmp_path))
    hashed = hash_password(SECRET)
    environ = {
        "AWS_SMTP_HOST": "email-smtp.eu-west-1.amazonaws.com",
        "AWS_SMTP_USERNAME": "AKIAEXAMPLE",
        "AWS_SMTP_PASSWORD": SECRET,
        "SES_RATE_LIMIT": "14",
        "REDIS_URL": f"redis://default:{SECRET}@redis:6379/0",
        "RELAY_AUTH_USERS": f"app:{hashed}",
        "SSL_CERT_PATH": certs.cert_file,
        "SSL_KEY_PATH": certs.key_file,
        "USE_BLACKLIST": "true",
        "DYNAMODB_TABLE": "ses-blacklist",
    }
    status, text = run(environ)
    assert status == 0, text
    assert SECRET not in text and hashed not in text and hashed.split("$")[-1] not in text
    lines = text.splitlines()
    assert "blacklist DynamoDB table ses-blacklist," in lines[0]
    assert "AWS_SMTP_PASSWORD=****" in lines
    assert "REDIS_URL=redis://default:****@redis:6379/0" in lines
    assert "RELAY_AUTH_USERS=app:****" in lines
    assert "AWS_SMTP_USERNAME=AKIAEXAMPLE" in lines


def test_local_smtp_url_password_is_masked() -> None:
    """RELAY_LOCAL_SMTP_URL's password is masked; the rest stays readable."""
    status, text = run({"RELAY_LOCAL_SMTP_URL": f"smtp://u:{SECRET}@127.0.0.1:2525"})
    assert status == 0 and SECRET not in text
    assert "RELAY_LOCAL_SMTP_URL=smtp://u:****@127.0.0.1:2525" in text.splitlines()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://redis:6379/0", "redis://redis:6379/0"),
        (f"redis://:{SECRET}@redis:6379/0", "redis://:****@redis:6379/0"),
        (f"rediss://u:{SECRET}@[::1]:6380", "rediss://u:****@[::1]:6380"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("environ", "needle"),
    [
        ({"SMTP_HOST": "0.0.0.0"}, "configuration error: SMTP_HOST: "),
        (
            {"SSL_CERT_PATH": "/nonexistent/c.pem", "SSL_KEY_PATH": "/nonexistent/k.pem"},
            "SSL_CERT_PATH",
        ),
        (
            {"USE_BLACKLIST": "true", "DYNAMODB_TABLE": "t", "RELAY_BLACKLIST_SQLITE": "/x.db"},
            "RELAY_BLACKLIST_SQLITE",
        ),
    ],
)
def test_what_start_up_refuses_is_exit_2_one_line(
    environ: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Open relay, bad TLS files, two blacklist stores: exit 2 and one line on stderr."""
    status, text = run(environ)
    assert status == 2 and text == ""
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("configuration error: ") and needle in line


def test_unloadable_tls_pair_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Files that exist but hold no certificate fail as they would at start-up."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a cert")
    key.write_text("not a key")
    status, _ = run({"SSL_CERT_PATH": str(cert), "SSL_KEY_PATH": str(key)})
    assert status == 2
    assert "cannot load certificate and key" in capsys.readouterr().err


def test_unknown_relay_variable_is_warned(capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped RELAY_* name is valid but named on stderr with the closest known setting."""
    status, text = run({"RELAY_POOL_SZE": "8"})
    assert status == 0 and "RELAY_POOL_SIZE=4" in text.splitlines()
    err = capsys.readouterr().err
    assert err.startswith("warning: RELAY_POOL_SZE: ") and "RELAY_POOL_SIZE" in err
