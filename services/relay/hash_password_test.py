"""Unit tests for `python -m relay.hash_password`."""

from __future__ import annotations

import io

import pytest

from relay.auth import verify_password
from relay.hash_password import main


def test_prints_user_and_hash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a piped password it prints `user:hash` that verifies the password."""
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["app"]) == 0
    user, hashed = capsys.readouterr().out.strip().split(":", 1)
    assert user == "app" and verify_password("s3cret", hashed)


def test_refuses_empty_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty password is refused with status 1."""
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main([]) == 1
