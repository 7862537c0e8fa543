"""Load through the relay process: every message answered 250 arrives exactly once, no 5xx, and
the relay's memory (PSS) stays flat. Short profile in CI, long one with `--long`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.scenarios import LONG, SHORT, Outcome, Profile, markdown_table, run_load


def _describe(outcome: Outcome) -> str:
    stats = outcome.result.stats
    return (
        f"\n{markdown_table([outcome])}\nreply codes: {dict(stats.codes)}; "
        f"{outcome.result.acked / max(outcome.result.seconds, 1e-9):.0f} acked/s"
    )


async def _check_load(profile: Profile, tmp_path: Path) -> None:
    outcome = await run_load(profile, tmp_path)
    print(_describe(outcome))
    assert outcome.result.sent == profile.load_messages
    assert outcome.result.acked == profile.load_messages, _describe(outcome)
    assert outcome.result.stats.replies_5xx == 0, _describe(outcome)
    assert outcome.tally.lost == 0, _describe(outcome)
    assert outcome.tally.duplicated == 0, _describe(outcome)
    assert outcome.passed, _describe(outcome)


async def test_short_load_is_exactly_once_with_flat_memory(tmp_path: Path) -> None:
    """5,000 messages over 20 connections: all acked, each received exactly once, PSS flat."""
    await _check_load(SHORT, tmp_path)


@pytest.mark.long
async def test_long_load_is_exactly_once_with_flat_memory(tmp_path: Path) -> None:
    """100,000 messages over 50 connections: all acked, each received exactly once, PSS flat."""
    await _check_load(LONG, tmp_path)
