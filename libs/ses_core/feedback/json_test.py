"""Tests for ses_core.feedback._json: typed, path-naming reads of untrusted JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from ses_core.errors import MalformedNotification
from ses_core.feedback._json import (
    as_object,
    describe,
    load_json,
    opt_bool,
    opt_int,
    opt_object,
    opt_str,
    parse_timestamp,
    req_list,
    req_object,
    req_str,
    req_timestamp,
    shorten,
    str_list,
)


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "a boolean"),
        (1, "a number"),
        (1.5, "a number"),
        ("", "a string"),
        ([], "an array"),
        ({}, "an object"),
        ({1}, "a set"),
    ],
)
def test_describe_names_json_types(value: Any, name: str) -> None:
    """Error messages name values by their JSON type."""
    assert describe(value) == name


def test_load_json_decodes_and_bounds_size() -> None:
    """load_json decodes text and bytes and refuses documents over the limit by size."""
    assert load_json('{"a": 1}', "$", max_chars=100) == {"a": 1}
    assert load_json(b"[1]", "$", max_chars=100) == [1]
    with pytest.raises(MalformedNotification, match="at most 3"):
        load_json("[1, 2]", "$.x", max_chars=3)


@pytest.mark.parametrize("text", ["{", b"\xff\xfe\x00", "9" * 5000, "[" * 100_000])
def test_load_json_converts_every_decoding_failure(text: Any) -> None:
    """Syntax errors, bad bytes, the int-digits limit and deep nesting all become Malformed."""
    with pytest.raises(MalformedNotification) as info:
        load_json(text, "$.Message", max_chars=1_000_000)
    assert info.value.path == "$.Message"


@pytest.mark.parametrize(
    ("reader", "value"),
    [
        (req_str, 1),
        (opt_str, []),
        (req_object, "x"),
        (opt_object, 3),
        (req_list, {}),
        (opt_int, "7"),
        (opt_int, True),
        (opt_bool, "true"),
        (req_timestamp, 5),
    ],
)
def test_readers_reject_wrong_types_with_path(reader: Any, value: Any) -> None:
    """Each reader raises MalformedNotification naming `path.key` for a mistyped value."""
    with pytest.raises(MalformedNotification) as info:
        reader({"k": value}, "k", "$.obj")
    assert info.value.path == "$.obj.k"


def test_missing_required_field_is_named_missing() -> None:
    """A missing required field is reported as missing, at its path."""
    with pytest.raises(MalformedNotification, match="got missing") as info:
        req_str({}, "k", "$")
    assert info.value.path == "$.k"


def test_optional_readers_accept_missing_and_null() -> None:
    """Optional readers give None (or empty) for a missing or null field."""
    for reader in (opt_str, opt_object, opt_int, opt_bool):
        assert reader({}, "k", "$") is None
        assert reader({"k": None}, "k", "$") is None
    assert str_list({"k": None}, "k", "$", required=False) == ()


def test_str_list_names_the_bad_item() -> None:
    """A non-string item in a string array is reported with its index."""
    with pytest.raises(MalformedNotification) as info:
        str_list({"k": ["a", 2]}, "k", "$", required=True)
    assert info.value.path == "$.k[1]"


def test_as_object_rejects_non_objects() -> None:
    """as_object accepts mappings only."""
    assert as_object({"a": 1}, "$") == {"a": 1}
    with pytest.raises(MalformedNotification):
        as_object([1], "$")


def test_timestamps_become_utc() -> None:
    """Timestamps are normalised to UTC; no offset means UTC."""
    assert parse_timestamp("2023-12-14T14:59:38.237Z", "$") == datetime(
        2023, 12, 14, 14, 59, 38, 237000, tzinfo=UTC
    )
    assert parse_timestamp("2023-12-14T15:59:38+01:00", "$").tzinfo is UTC
    assert parse_timestamp("2023-12-14T14:59:38", "$") == datetime(
        2023, 12, 14, 14, 59, 38, tzinfo=UTC
    )
    east = datetime(2023, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert parse_timestamp(east.isoformat(), "$") == east


@pytest.mark.parametrize(
    "text", ["yesterday", "0001-01-01T00:00:00+01:00", "2023-12-14" + "0" * 80]
)
def test_bad_timestamps_are_malformed(text: str) -> None:
    """Unparseable, out-of-range and absurdly long timestamps raise MalformedNotification."""
    with pytest.raises(MalformedNotification, match="ISO 8601"):
        parse_timestamp(text, "$.t")


def test_shorten_cuts_long_text() -> None:
    """shorten keeps error messages small."""
    assert shorten("abc") == "abc"
    assert shorten("x" * 100, 10) == "x" * 10 + "..."
