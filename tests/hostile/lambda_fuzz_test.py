"""Fuzzed SNS/SQS events and SES documents against the blacklist Lambda (issue 7, item 6).

The Lambda's contract (blacklist_lambda/processor.py): a malformed record is logged and skipped, the
valid records of the same batch are still written, and the only way an invocation fails is the
documented one for infrastructure errors (`BlacklistUnavailable`: raised for SNS, listed in
`batchItemFailures` for SQS). The handler runs exactly as wired for production (`make_handler`)
over moto's DynamoDB and SES (`mock_aws`). Inputs come from hypothesis (arbitrary JSON, arbitrary
events) and from mutating the real documents of `ses_core.testing.feedback_docs`: a field deleted,
nulled, retyped, emptied, made enormous or deeply nested, the JSON text truncated.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from blacklist_lambda.config import LambdaConfig
from blacklist_lambda.handler import Handler, make_handler
from ses_core.blacklist import BlacklistEntry, BlacklistEvent, OccurrenceResult
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.errors import BlacklistUnavailable
from ses_core.testing import feedback_docs as fx
from ses_core.testing.blacklists import DelegatingBlacklist
from ses_core.testing.moto_dynamodb import create_blacklist_table

REGION = "us-east-1"
TABLE = "blacklist"
SENDER = "alerts@example.com"
CONFIG = LambdaConfig(
    ses_region=REGION, email_from=SENDER, email_to=("ops@example.com",), dynamodb_table=TABLE
)
FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: The real documents every mutation starts from.
DOCUMENTS: tuple[Callable[[], dict[str, Any]], ...] = (
    fx.bounce_with_dsn,
    fx.bounce_without_dsn,
    fx.transient_bounce,
    fx.complaint_with_feedback,
    fx.complaint_without_feedback,
    fx.delivery,
    fx.event_bounce,
    fx.event_complaint,
    fx.event_delivery,
    lambda: fx.other_event("Reject"),
    lambda: fx.other_event("Open"),
    fx.subscription_succeeded,
)


class FakeContext:
    """The two attributes of Lambda's context object the handler reads."""

    function_name = "blacklist-fuzz"
    aws_request_id = "req-fuzz"


CONTEXT = FakeContext()


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    """moto with the original table schema and a verified alert sender; dummy credentials."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        for name, value in (
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", REGION),
            ("AWS_REGION", REGION),
        ):
            patch.setenv(name, value)
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            create_blacklist_table(dynamodb, TABLE)
            ses = boto3.client("ses", region_name=REGION)
            ses.verify_email_identity(EmailAddress=SENDER)
            yield {"dynamodb": dynamodb, "ses": ses}


@pytest.fixture(scope="module")
def blacklist(aws: dict[str, Any]) -> DynamoDBBlacklist:
    """The real DynamoDB adapter on the moto table."""
    return DynamoDBBlacklist(TABLE, client=aws["dynamodb"])


@pytest.fixture(scope="module")
def handle(aws: dict[str, Any], blacklist: DynamoDBBlacklist) -> Handler:
    """The handler as production wires it, over moto."""
    return make_handler(CONFIG, blacklist, aws["ses"])


class JsonLines(logging.Handler):
    """Collects the Lambda's structured log lines (JSON objects with an `event` field)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[dict[str, Any]] = []
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("{"):
            self.events.append(json.loads(message))
        if record.exc_info:
            self.tracebacks.append(message)

    def named(self, event: str) -> list[dict[str, Any]]:
        """The lines whose `event` is `event`."""
        return [line for line in self.events if line.get("event") == event]


class captured_logs:
    """Attach a `JsonLines` to the `blacklist_lambda` logger at INFO for a `with` block."""

    def __enter__(self) -> JsonLines:
        self.handler = JsonLines()
        self.logger = logging.getLogger("blacklist_lambda")
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)
        return self.handler

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


# --- documents and mutations ------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=15), children, max_size=4),
    max_leaves=20,
)
ODD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(
        [
            None,
            "",
            0,
            -1,
            True,
            [],
            {},
            "x" * 100_000,
            "not-an-address",
            "a@b@c",
            "\x00@example.com",
            "user@exa mple.com",
            "2023-13-45T99:99:99Z",
            "Permanent",
            "Transient",
            "Undetermined",
            "abuse",
            "not-spam",
            [None],
            [{}],
            [{"emailAddress": None}],
            [{"emailAddress": ["a@example.com"]}],
            {"emailAddress": "a@example.com"},
            10**400,
            1e308,
        ]
    ),
)


def unique_address() -> str:
    """An address no other example uses, so its entry proves this example's write."""
    return f"valid-{uuid.uuid4().hex[:16]}@example.com"


def valid_bounce(address: str) -> dict[str, Any]:
    """A Permanent bounce (always blacklisted) for `address`, with its own feedback id."""
    document = fx.bounce_with_dsn(address)
    document["bounce"]["feedbackId"] = f"fuzz-{uuid.uuid4().hex}"
    return document


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (tuple of keys and indexes) to a node below `value`."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from paths(child, (*prefix, index))


def mutated(document: Any, path: tuple[Any, ...], action: str, value: Any = None) -> Any:
    """A copy of `document` with the node at `path` deleted, replaced, or nested deeply."""
    result = copy.deepcopy(document)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "nest":
        deep: Any = parent[last]
        for _ in range(200):
            deep = [deep]
        parent[last] = deep
    else:
        parent[last] = value
    return result


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A real SES document with one to three random mutations."""
    document: Any = draw(st.sampled_from(DOCUMENTS))()
    for _ in range(draw(st.integers(1, 3))):
        candidates = list(paths(document))
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        action = draw(st.sampled_from(["delete", "replace", "replace", "nest"]))
        document = mutated(document, path, action, draw(ODD_VALUES))
    return document


#: Bodies and messages that can never parse (the record is certainly malformed).
BROKEN_TEXT = st.one_of(
    st.sampled_from(["", "{", "[]", "null", "42", '"text"', "{]", "\x00", "[" * 100_000]),
    st.text(max_size=60).filter(lambda t: not _is_json_object(t)),
)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


@st.composite
def hostile_sqs_record(draw: st.DrawFn, message_id: str) -> tuple[dict[str, Any], bool]:
    """(an SQS record, whether it is certainly malformed)."""
    kind = draw(st.sampled_from(["mutated", "raw-mutated", "json", "broken", "truncated", "shape"]))
    if kind == "mutated":
        return (
            fx.sqs_record(fx.sns_envelope(draw(mutated_documents())), message_id=message_id),
            False,
        )
    if kind == "raw-mutated":
        return fx.sqs_record(json.dumps(draw(mutated_documents())), message_id=message_id), False
    if kind == "json":
        body = json.dumps(draw(JSON_VALUES))
        return fx.sqs_record(body, message_id=message_id), not body.startswith("{")
    if kind == "broken":
        return fx.sqs_record(draw(BROKEN_TEXT), message_id=message_id), True
    if kind == "truncated":
        text = json.dumps(fx.sns_envelope(draw(st.sampled_from(DOCUMENTS))()))
        cut = draw(st.integers(0, len(text) - 1))
        return fx.sqs_record(text[:cut], message_id=message_id), True
    record = fx.sqs_record(json.dumps(valid_bounce(unique_address())), message_id=message_id)
    record["body"] = draw(st.one_of(JSON_VALUES.filter(lambda v: not isinstance(v, str))))
    return record, True


@st.composite
def hostile_sns_record(draw: st.DrawFn, message_id: str) -> tuple[dict[str, Any], bool]:
    """(a Lambda SNS record, whether it is certainly malformed)."""
    kind = draw(st.sampled_from(["mutated", "envelope", "broken", "shape"]))
    if kind == "mutated":
        return fx.lambda_sns_record(draw(mutated_documents()), message_id=message_id), False
    if kind == "envelope":
        record = fx.lambda_sns_record(fx.bounce_with_dsn(), message_id=message_id)
        path = draw(st.sampled_from(list(paths(record))))
        action = draw(st.sampled_from(["delete", "replace"]))
        return mutated(record, path, action, draw(ODD_VALUES)), False
    if kind == "broken":
        return fx.lambda_sns_record(draw(BROKEN_TEXT), message_id=message_id), True
    record = fx.lambda_sns_record(fx.bounce_with_dsn(), message_id=message_id)
    record["Sns"] = draw(JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
    return record, True


def written(blacklist: DynamoDBBlacklist, addresses: Iterable[str]) -> set[str]:
    """Which of `addresses` have a blacklist entry."""
    return set(blacklist.lookup_many(list(addresses)))


# --- fuzzed batches ---------------------------------------------------------------------------


@FUZZ_SETTINGS
@given(data=st.data(), size=st.integers(1, 6))
def test_fuzzed_sqs_batches_write_valid_records_and_skip_malformed_ones(
    handle: Handler, blacklist: DynamoDBBlacklist, data: st.DataObject, size: int
) -> None:
    """In an SQS batch of hostile records, valid ones are written, malformed ones logged and
    skipped, and no record is reported failed (the store is healthy)."""
    valid = [unique_address(), unique_address()]
    records: list[dict[str, Any]] = []
    certainly_bad: set[str] = set()
    for number in range(size):
        record, bad = data.draw(hostile_sqs_record(f"hostile-{number}"))
        records.append(record)
        if bad:
            certainly_bad.add(f"hostile-{number}")
    position = data.draw(st.integers(0, len(records)))
    records.insert(
        position, fx.sqs_record(fx.sns_envelope(valid_bounce(valid[0])), message_id="v0")
    )
    records.append(fx.sqs_record(json.dumps(valid_bounce(valid[1])), message_id="v1"))
    with captured_logs() as logs:
        result = handle({"Records": records}, CONTEXT)
    assert result == {"batchItemFailures": []}, (result, logs.tracebacks)
    assert written(blacklist, valid) == set(valid)
    logged = {line["message_id"] for line in logs.named("malformed_record")}
    assert certainly_bad <= logged, (certainly_bad, logged)
    assert not logs.tracebacks, logs.tracebacks


@FUZZ_SETTINGS
@given(data=st.data(), size=st.integers(1, 6))
def test_fuzzed_sns_events_write_valid_records_and_skip_malformed_ones(
    handle: Handler, blacklist: DynamoDBBlacklist, data: st.DataObject, size: int
) -> None:
    """In an SNS event of hostile records, valid ones are written, malformed ones logged and
    skipped, and the invocation succeeds (the store is healthy)."""
    valid = unique_address()
    records: list[dict[str, Any]] = []
    certainly_bad = 0
    for number in range(size):
        record, bad = data.draw(hostile_sns_record(f"hostile-{number}"))
        records.append(record)
        certainly_bad += bad
    position = data.draw(st.integers(0, len(records)))
    records.insert(position, fx.lambda_sns_record(valid_bounce(valid), message_id="valid"))
    with captured_logs() as logs:
        result = handle({"Records": records}, CONTEXT)
    assert result is None
    assert written(blacklist, [valid]) == {valid}
    assert len(logs.named("malformed_record")) >= certainly_bad
    assert not logs.tracebacks, logs.tracebacks


@FUZZ_SETTINGS
@given(event=st.one_of(JSON_VALUES, st.fixed_dictionaries({"Records": JSON_VALUES})))
def test_arbitrary_events_never_crash_the_handler(handle: Handler, event: Any) -> None:
    """Any JSON value as the event (or as its Records) is logged and survived, never raised."""
    with captured_logs() as logs:
        result = handle(event, CONTEXT)
    assert result is None or (
        isinstance(result, dict) and result.get("batchItemFailures") == []
    ), result
    assert not logs.tracebacks, logs.tracebacks


def test_every_single_field_mutation_of_real_documents_is_survived(
    handle: Handler, blacklist: DynamoDBBlacklist
) -> None:
    """Each field of each real document deleted, nulled, retyped or nested: no record fails."""
    records: list[dict[str, Any]] = []
    for factory in DOCUMENTS:
        document = factory()
        for path in paths(document):
            for action, value in (
                ("delete", None),
                ("replace", None),
                ("replace", 12345),
                ("replace", ""),
                ("replace", {"unexpected": ["shape"]}),
                ("nest", None),
            ):
                body = json.dumps(mutated(document, path, action, value))
                records.append(fx.sqs_record(body, message_id=f"m{len(records)}"))
    assert len(records) > 500
    valid = unique_address()
    for start in range(0, len(records), 50):
        batch = [*records[start : start + 50], fx.sqs_record(json.dumps(valid_bounce(valid)))]
        with captured_logs() as logs:
            result = handle({"Records": batch}, CONTEXT)
        assert result == {"batchItemFailures": []}, (result, logs.tracebacks)
        assert not logs.tracebacks, logs.tracebacks
    assert written(blacklist, [valid]) == {valid}


# --- the documented failure path ----------------------------------------------------------------


class FailingFor(DelegatingBlacklist):
    """A blacklist that fails `record` with BlacklistUnavailable for one address."""

    def __init__(self, inner: DynamoDBBlacklist, address: str) -> None:
        super().__init__(inner)
        self.address = address

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        if event.address == self.address:
            raise BlacklistUnavailable(f"DynamoDB table {TABLE!r}: throttled")
        return self.inner.record(event)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        if event.address == self.address:
            raise BlacklistUnavailable(f"DynamoDB table {TABLE!r}: throttled")
        return self.inner.record_occurrence(event, threshold=threshold)


@settings(FUZZ_SETTINGS, max_examples=25)
@given(broken=st.lists(BROKEN_TEXT, min_size=1, max_size=5))
def test_store_failure_is_the_only_failure_reported(
    aws: dict[str, Any], blacklist: DynamoDBBlacklist, broken: list[str]
) -> None:
    """With malformed records around, a store failure fails exactly its own record (SQS) or the
    invocation with BlacklistUnavailable (SNS); the valid record before it is written."""
    valid, failing = unique_address(), unique_address()
    handler = make_handler(CONFIG, FailingFor(blacklist, failing), aws["ses"])
    sqs = [
        fx.sqs_record(json.dumps(valid_bounce(valid)), message_id="valid"),
        *(fx.sqs_record(body, message_id=f"bad-{n}") for n, body in enumerate(broken)),
        fx.sqs_record(json.dumps(valid_bounce(failing)), message_id="store-down"),
    ]
    with captured_logs() as logs:
        result = handler({"Records": sqs}, CONTEXT)
    assert result == {"batchItemFailures": [{"itemIdentifier": "store-down"}]}
    assert len(logs.named("malformed_record")) == len(broken)
    assert written(blacklist, [valid, failing]) == {valid}

    valid_sns, failing_sns = unique_address(), unique_address()
    handler = make_handler(CONFIG, FailingFor(blacklist, failing_sns), aws["ses"])
    sns = [
        fx.lambda_sns_record(valid_bounce(valid_sns), message_id="valid"),
        *(fx.lambda_sns_record(body, message_id=f"bad-{n}") for n, body in enumerate(broken)),
        fx.lambda_sns_record(valid_bounce(failing_sns), message_id="store-down"),
    ]
    with pytest.raises(BlacklistUnavailable):
        handler({"Records": sns}, CONTEXT)
    assert written(blacklist, [valid_sns, failing_sns]) == {valid_sns}
