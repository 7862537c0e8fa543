"""The fault matrix: every row injects its fault while load runs through the relay process and
must keep every promise listed in `tests.reliability.scenarios` (nothing acked lost, 4xx for
transient causes, duplicates only in the ambiguous case, relay up, readiness truthful)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.reliability.scenarios import (
    LONG,
    SCENARIOS,
    SHORT,
    Outcome,
    Profile,
    Scenario,
    markdown_table,
    run_scenario,
)


def _describe(outcome: Outcome) -> str:
    stats = outcome.result.stats
    polls = [(round(p.at, 2), p.status) for p in outcome.readiness_during]
    return (
        f"\n{markdown_table([outcome])}\nreply codes: {dict(stats.codes)}; "
        f"fault applied {outcome.evidence} time(s); ambiguous at client {stats.ambiguous}; "
        f"readiness polls {polls}\nproblems: {list(outcome.problems)}"
    )


#: Seconds a row may take beyond its load's time budget (start-up, recovery waits, clean-up)
#: before it fails as hung: a stuck row then fails with the await it was stuck in, and the rows
#: after it still run, instead of the whole file reaching Pants' timeout without a word.
ROW_OVERHEAD = 120.0


async def _check_row(scenario: Scenario, profile: Profile, tmp_path: Path) -> None:
    async with asyncio.timeout(profile.time_budget + ROW_OVERHEAD):
        outcome = await run_scenario(scenario, profile, tmp_path)
    print(_describe(outcome))
    assert outcome.result.sent == profile.fault_messages
    assert outcome.tally.lost == 0, _describe(outcome)
    assert outcome.passed, _describe(outcome)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.key for s in SCENARIOS])
async def test_fault_row_short(scenario: Scenario, tmp_path: Path) -> None:
    """Short profile: the row's fault during 500 messages over 10 connections breaks no promise."""
    await _check_row(scenario, SHORT, tmp_path)


@pytest.mark.long
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.key for s in SCENARIOS])
async def test_fault_row_long(scenario: Scenario, tmp_path: Path) -> None:
    """Long profile: the row's fault (30 s storm, 20 s outage) during 5,000 messages keeps every
    promise."""
    await _check_row(scenario, LONG, tmp_path)
