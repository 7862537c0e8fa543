"""Path-aware readers for untrusted JSON documents (SES notifications and their envelopes).

Every SES/SNS/SQS field is read through these helpers, so a missing key or a value of the wrong
type becomes a `MalformedNotification` naming the JSON path of the field (for example
`$.Records[0].Sns.Message.bounce.bouncedRecipients[2].emailAddress`) instead of a KeyError or
TypeError deep inside the parser. Paths of fields are only spelled out when something is wrong,
which keeps the common case cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

from ses_core.errors import MalformedNotification

#: Largest document accepted at the top level (a whole Lambda event): Lambda's own payload cap.
MAX_PAYLOAD_CHARS = 6 * 1024 * 1024
#: Largest nested document (an SNS `Message`, an SQS `body`): SQS's message size cap (1 MiB);
#: SNS's is smaller (256 KiB).
MAX_MESSAGE_CHARS = 1024 * 1024

_MISSING: Any = object()
_JSON_TYPE_NAMES = {
    type(None): "null",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}

JsonObject = Mapping[str, Any]


def describe(value: object) -> str:
    """Name a value's JSON type for an error message ("a string", "null", "missing")."""
    if value is _MISSING:
        return "missing"
    name = _JSON_TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def load_json(text: str | bytes | bytearray, path: str, *, max_chars: int) -> object:
    """Decode one JSON document, converting every decoding failure into MalformedNotification."""
    if len(text) > max_chars:
        message = f"document is {len(text)} characters long; at most {max_chars} accepted"
        raise MalformedNotification(message, path)
    try:
        return json.loads(text)
    except RecursionError:
        # The C decoder recurses once per nesting level: deeply nested junk ends here.
        raise MalformedNotification("JSON is nested too deeply", path) from None
    except ValueError as exc:
        # JSONDecodeError, UnicodeDecodeError (bytes) and the int-digits limit are all ValueErrors.
        message = f"invalid JSON: {exc}"
        raise MalformedNotification(message, path) from None


def fail(path: str, key: str | None, expected: str, value: object) -> NoReturn:
    """Raise MalformedNotification for field `key` of the object at `path`."""
    where = path if key is None else f"{path}.{key}"
    message = f"expected {expected}, got {describe(value)}"
    raise MalformedNotification(message, where)


def as_object(value: object, path: str) -> JsonObject:
    """`value` itself, checked to be a JSON object."""
    if isinstance(value, dict | Mapping):
        return value
    fail(path, None, "an object", value)


def req_object(obj: JsonObject, key: str, path: str) -> JsonObject:
    """The object under `key`; required."""
    value = obj.get(key, _MISSING)
    if isinstance(value, dict | Mapping):
        return value
    fail(path, key, "an object", value)


def opt_object(obj: JsonObject, key: str, path: str) -> JsonObject | None:
    """The object under `key`, or None when missing or null."""
    value = obj.get(key)
    if value is None or isinstance(value, dict | Mapping):
        return value
    fail(path, key, "an object or null", value)


def req_list(obj: JsonObject, key: str, path: str) -> list[Any]:
    """The array under `key`; required."""
    value = obj.get(key, _MISSING)
    if type(value) is list:
        return value
    fail(path, key, "an array", value)


def req_str(obj: JsonObject, key: str, path: str) -> str:
    """The string under `key`; required."""
    value = obj.get(key, _MISSING)
    if type(value) is str:
        return value
    fail(path, key, "a string", value)


def opt_str(obj: JsonObject, key: str, path: str) -> str | None:
    """The string under `key`, or None when missing or null."""
    value = obj.get(key)
    if type(value) is str or value is None:
        return value
    fail(path, key, "a string or null", value)


def opt_int(obj: JsonObject, key: str, path: str) -> int | None:
    """The integer under `key`, or None when missing or null (booleans are not integers)."""
    value = obj.get(key)
    if value is None or type(value) is int:
        return value
    fail(path, key, "an integer or null", value)


def opt_bool(obj: JsonObject, key: str, path: str) -> bool | None:
    """The boolean under `key`, or None when missing or null."""
    value = obj.get(key)
    if value is None or type(value) is bool:
        return value
    fail(path, key, "a boolean or null", value)


def str_list(obj: JsonObject, key: str, path: str, *, required: bool) -> tuple[str, ...]:
    """The array of strings under `key`; an optional one may be missing or null (empty)."""
    value = obj.get(key, _MISSING)
    if not required and (value is _MISSING or value is None):
        return ()
    if type(value) is not list:
        fail(path, key, "an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            fail(path, f"{key}[{i}]", "a string", item)
    return tuple(value)


def req_timestamp(obj: JsonObject, key: str, path: str) -> datetime:
    """The ISO 8601 timestamp under `key` as a UTC datetime (no offset means UTC); required."""
    return parse_timestamp(req_str(obj, key, path), f"{path}.{key}")


def parse_timestamp(text: str, path: str) -> datetime:
    """Parse an ISO 8601 timestamp as SES and SNS write it (`2016-01-27T14:59:38.237Z`)."""
    try:
        # Longer strings are never timestamps; refusing them early keeps junk cheap.
        if len(text) > 64:
            raise ValueError(text)
        value = datetime.fromisoformat(text)
        # Normalise to UTC here: an offset near year 1 or 9999 cannot be converted (OverflowError).
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        message = f"expected an ISO 8601 timestamp, got {shorten(text)!r}"
        raise MalformedNotification(message, path) from None
    return value


def shorten(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters for error messages (junk can be megabytes long)."""
    return text if len(text) <= limit else f"{text[:limit]}..."
