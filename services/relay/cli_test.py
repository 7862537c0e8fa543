"""Unit tests for the relay's command line (`relay.cli`) and its dispatch in `relay.main`."""

from __future__ import annotations

import io
from typing import Any

import pytest

from relay import cli, main
from relay.auth import verify_password


@pytest.mark.parametrize("argv", [[], ["serve"]])
def test_no_command_or_serve_runs_the_relay(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`relay` alone and `relay serve` start the server (and nothing else)."""
    calls: list[str] = []

    def fake_run_relay() -> int:
        calls.append("serve")
        return 0

    monkeypatch.setattr(main, "run_relay", fake_run_relay)
    assert main.main(argv) == 0
    assert calls == ["serve"]


def test_hash_password_prints_the_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`relay hash-password app` reads stdin and prints `app:hash` that verifies."""
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    monkeypatch.setattr(main, "run_relay", lambda: pytest.fail("the server must not start"))
    assert main.main(["hash-password", "app"]) == 0
    user, hashed = capsys.readouterr().out.strip().split(":", 1)
    assert user == "app" and verify_password("s3cret", hashed)


def test_api_key_create_passes_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """`relay api-key create TABLE --user U --description D` reaches `relay.api_keys.create`."""
    seen: dict[str, Any] = {}

    def fake_create(table: str, **options: Any) -> int:
        seen.update(options, table=table)
        return 0

    monkeypatch.setattr("relay.api_keys.create", fake_create)
    argv = ["api-key", "create", "keys", "--user", "svc", "--description", "billing"]
    assert main.main(argv) == 0
    assert seen == {"table": "keys", "user": "svc", "description": "billing"}


def test_check_config_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`relay check-config` validates os.environ: a bad value is exit 2 and one line."""
    monkeypatch.setenv("SMTP_PORT", "twenty-five")
    assert main.main(["check-config"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "configuration error: SMTP_PORT: expected an integer, got 'twenty-five'"
    ]


@pytest.mark.parametrize("argv", [["--help"], ["api-key", "--help"], ["hash-password", "-h"]])
def test_help_exits_0(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """--help prints usage naming the commands and exits 0."""
    with pytest.raises(SystemExit) as stopped:
        main.main(argv)
    assert stopped.value.code == 0
    assert "usage: relay" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["frobnicate"], ["api-key"], ["api-key", "create"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command or a missing argument is argparse's usage error (exit 2)."""
    with pytest.raises(SystemExit) as stopped:
        main.main(argv)
    assert stopped.value.code == 2
    assert "usage: relay" in capsys.readouterr().err


def test_every_tool_command_is_dispatched() -> None:
    """Each subcommand the parser knows is either the server or a tool `run_tool` handles."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    assert commands.choices is not None
    assert set(commands.choices) == {
        "serve",
        "hash-password",
        "api-key",
        "check-config",
        "queue",
    }
