"""The relay reports the release version: `relay --version` and the `relay_build_info` metric."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from relay import main as relay_main
from relay.metrics import RelayMetrics
from ses_core.version import VERSION


def test_version_option_prints_the_release_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`relay --version` prints `relay <version>` and exits 0 without starting anything."""
    with pytest.raises(SystemExit) as exited:
        relay_main.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"relay {VERSION}\n"


def test_build_info_metric_carries_the_version() -> None:
    """`relay_build_info{version="<version>"} 1.0` is exported from start."""
    text = generate_latest(RelayMetrics().registry).decode()
    assert f'relay_build_info{{version="{VERSION}"}} 1.0' in text
