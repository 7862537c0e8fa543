"""The envelope's JSON codec: a faithful round trip, and one-line SpoolCorrupt for the rest."""

from __future__ import annotations

import json

import pytest

from ses_core.errors import SpoolCorrupt
from ses_core.queue import QueuedEnvelope, RecipientState, SpooledRecipient
from ses_core.queue.sqs._envelope import SCHEMA_VERSION, EnvelopeRecord, decode, encode

RECORD = EnvelopeRecord(
    id="0123abcd",
    key="bodies/0123abcd",
    envelope=QueuedEnvelope(
        sender="élise@exemple.fr",
        recipients=(
            SpooledRecipient("a@example.net", RecipientState.ACCEPTED, 1, 250, "Ok"),
            SpooledRecipient("b@example.net", RecipientState.FAILED, 2, 550, "no", 1),
            SpooledRecipient("c@example.net"),
        ),
        received_at=1700000000.25,
        smtputf8=True,
        eightbit=True,
        transaction_id="tx-1",
        size=1234,
    ),
    attempts=2,
    next_attempt_at=1700000900.5,
    last_error="451 throttled",
)


def test_a_record_round_trips_exactly() -> None:
    """Every field, recipient states and non-ASCII addresses included, survives the trip."""
    assert decode(encode(RECORD)) == RECORD
    dead = EnvelopeRecord("x", "k", RECORD.envelope, dead_at=1700001000.0)
    assert decode(encode(dead)) == dead


def test_the_message_is_compact_utf8_json_with_a_version() -> None:
    """The SQS body is JSON carrying the schema version; addresses are not \\u-escaped."""
    text = encode(RECORD)
    assert json.loads(text)["v"] == SCHEMA_VERSION
    assert "élise@exemple.fr" in text
    assert ": " not in text


def _mutated(**changes: object) -> str:
    document = json.loads(encode(RECORD))
    document.update(changes)
    return json.dumps(document)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "envelope is not JSON"),
        ("[1, 2]", "envelope is not a JSON object"),
        (_mutated(v=2), "schema version 2 is not 1"),
        (_mutated(v=None), "schema version None"),
        (_mutated(recipients=[]), "at least one recipient"),
        (_mutated(recipients=[{"address": "a@b"}]), "KeyError"),
        (_mutated(attempts=-1), "expected a count"),
        (_mutated(attempts=True), "expected a count"),
        (_mutated(received_at="yesterday"), "expected epoch seconds"),
        (_mutated(smtputf8="yes"), "expected true or false"),
        (_mutated(sender=None), "expected a string"),
        (_mutated(dead_at=float("nan")), "expected epoch seconds"),
    ],
)
def test_anything_else_is_corrupt_in_one_line(text: str, reason: str) -> None:
    """Undecodable envelopes raise SpoolCorrupt saying what is wrong, never another error."""
    with pytest.raises(SpoolCorrupt, match=reason) as caught:
        decode(text)
    assert "\n" not in str(caught.value)


def test_an_unknown_recipient_state_is_corrupt() -> None:
    """A state this version does not know is refused, not guessed."""
    document = json.loads(encode(RECORD))
    document["recipients"][0]["state"] = "bounced"
    with pytest.raises(SpoolCorrupt, match="'bounced' is not a valid RecipientState"):
        decode(json.dumps(document))
