"""Tests for ses_core.blacklist.feedback_writer: the processing the Lambda, the CLI's replay and
the relay's SNS endpoint share (their own tests cover it through them too)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from ses_core.blacklist import InMemoryBlacklist
from ses_core.blacklist.feedback_writer import FeedbackWriter
from ses_core.feedback import DEFAULT_POLICY, parse_feedback
from ses_core.testing import feedback_docs as fx


def test_bounce_is_written_and_logged_to_the_given_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A permanent bounce is recorded; the JSON line goes to the caller's logger."""
    blacklist = InMemoryBlacklist()
    logger = logging.getLogger("some.service")
    caplog.set_level(logging.INFO)
    writer = FeedbackWriter(blacklist, policy=DEFAULT_POLICY, logger=logger)
    (record,) = parse_feedback(fx.sns_envelope(fx.bounce_with_dsn("jane@example.com")))
    writer.apply(record, "m-1")
    writer.apply(record, "m-1")  # a redelivery: idempotent per feedback id
    entry = blacklist.get("jane@example.com")
    assert entry is not None and entry.count == 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "some.service"]
    assert [line["event"] for line in lines] == ["blacklisted", "blacklisted"]


def test_control_message_and_delivery_are_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A SubscriptionConfirmation and a Delivery write nothing."""
    blacklist = InMemoryBlacklist()
    caplog.set_level(logging.INFO)
    writer = FeedbackWriter(blacklist)
    (confirmation,) = parse_feedback(fx.subscription_confirmation())
    (delivery,) = parse_feedback(fx.sns_envelope(fx.delivery()))
    writer.apply(confirmation, "c-1")
    writer.apply(delivery, "d-1")
    assert blacklist.list_page().entries == ()
    events = [json.loads(r.getMessage())["event"] for r in caplog.records]
    assert events == ["sns_control_message", "not_written"]


def test_importing_it_pulls_in_no_service_and_no_aws_sdk() -> None:
    """The relay imports this module; it must not drag in the Lambda package or boto3."""
    code = (
        "import sys, ses_core.blacklist.feedback_writer; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('blacklist_lambda', 'blacklist_cli', 'relay', 'boto3')]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)
