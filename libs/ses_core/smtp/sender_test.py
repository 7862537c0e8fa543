"""Tests for the message a `MessageSender` takes."""

from __future__ import annotations

import pytest

from ses_core.smtp.sender import OutboundMessage


def test_a_message_needs_a_recipient_and_keeps_them_as_a_tuple() -> None:
    """No recipients is refused; any iterable of recipients is stored as a tuple, in order."""
    with pytest.raises(ValueError):
        OutboundMessage("a@x", (), b"")
    message = OutboundMessage("a@x", ["b@x", "c@x"], b"")
    assert message.recipients == ("b@x", "c@x")
