"""Unit tests of the junk-command budget (the hostile suite drives it through real sessions)."""

from __future__ import annotations

import pytest

from relay.junk import JUNK_COMMANDS, JunkBudget, is_junk_reply


def test_the_budget_allows_limit_units_then_refuses_until_refilled() -> None:
    budget = JunkBudget(3)
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    assert budget.left == 0
    budget.refill()
    assert budget.left == 3
    assert budget.spend()


def test_a_limit_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JunkBudget(0)


@pytest.mark.parametrize(
    "reply",
    [
        "500 Error: bad syntax",
        "501 5.1.3 Bad recipient address syntax: no @",
        "502 5.5.1 Too many unrecognized commands, goodbye.",
        "503 5.5.1 Error: nested MAIL command",
        "504 5.5.4 Unrecognized authentication type",
        "452 4.5.3 Too many recipients",
        "503",
    ],
)
def test_protocol_errors_are_junk(reply: str) -> None:
    assert is_junk_reply(reply)


@pytest.mark.parametrize(
    "reply",
    [
        "250 OK",
        "250-SIZE 41943040",
        "354 End data with <CR><LF>.<CR><LF>",
        "550 5.1.1 <you@example.org>: recipient is blacklisted (bounce)",
        "451 4.3.0 Blacklist unavailable, try again later",
        "535 5.7.8 Authentication credentials invalid",
        "503-continued",
        "5030 not a reply code",
    ],
)
def test_policy_answers_and_successes_are_not_junk(reply: str) -> None:
    """A refused recipient or a temporary failure is the relay's answer, not the client's fault."""
    assert not is_junk_reply(reply)


def test_mail_commands_are_not_junk() -> None:
    assert not {"MAIL", "RCPT", "DATA", "AUTH", "STARTTLS", "QUIT"} & JUNK_COMMANDS
    assert {"NOOP", "RSET", "EHLO", "HELO", "VRFY", "HELP"} <= JUNK_COMMANDS
