"""The `X-SES-*` headers the API path consumes: read them, check them, take them out.

SES's SMTP interface honours `X-SES-CONFIGURATION-SET` and `X-SES-MESSAGE-TAGS` (`name=value,
name2=value2`) and removes them; on the API path the relay does the same, so a client sees one
behaviour whichever upstream is configured. Everything else in the message is left byte for byte
as it came (other `X-SES-*` headers included): the original bytes are what SES signs and sends.
"""

from __future__ import annotations

import re

import attrs

CONFIGURATION_SET_HEADER = "X-SES-CONFIGURATION-SET"
MESSAGE_TAGS_HEADER = "X-SES-MESSAGE-TAGS"
_CONSUMED = frozenset({CONFIGURATION_SET_HEADER.lower(), MESSAGE_TAGS_HEADER.lower()})
#: SES's rule for tag names and values, and configuration set names.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,255}")
_SET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
_BLANK_LINE = re.compile(rb"\n\r?\n")


class HeaderError(ValueError):
    """An `X-SES-*` header SES would refuse; the text names the header and what is wrong."""


@attrs.frozen
class SesHeaders:
    """What the consumed headers asked for, and the message without them.

    Attributes:
        data: the message bytes without the consumed headers.
        configuration_set: the header's configuration set, or None.
        tags: (name, value) pairs in header order.
    """

    data: bytes
    configuration_set: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


def consume_ses_headers(data: bytes) -> SesHeaders:
    """Take the configuration set and tag headers out of `data`; raise `HeaderError` if they
    are malformed. Only the header block is read (up to the first empty line)."""
    kept: list[bytes] = []
    fields: list[tuple[str, bytes]] = []
    blank = _BLANK_LINE.search(data)
    head_size = blank.start() + 1 if blank else len(data)  # only the header block is split
    lines = _LINE.findall(data, 0, head_size)
    index = 0
    while index < len(lines):
        line = lines[index]
        if line in (b"\r\n", b"\n") or not line.strip():
            break
        name, colon, _ = line.partition(b":")
        block = [line]
        while index + 1 < len(lines) and lines[index + 1][:1] in (b" ", b"\t"):
            index += 1
            block.append(lines[index])
        index += 1
        key = name.strip().decode("latin-1").lower() if colon else ""
        if key in _CONSUMED:
            fields.append((key, b"".join(block).partition(b":")[2]))
        else:
            kept.extend(block)
    if not fields:
        return SesHeaders(data)
    body = b"".join(lines[index:]) + data[head_size:]
    configuration_set: str | None = None
    tags: list[tuple[str, str]] = []
    for key, raw in fields:
        value = " ".join(raw.decode("latin-1").split())
        if key == CONFIGURATION_SET_HEADER.lower():
            if configuration_set is not None or not _SET_NAME.fullmatch(value):
                message = f"{CONFIGURATION_SET_HEADER}: not one configuration set name: {value!r}"
                raise HeaderError(message)
            configuration_set = value
        else:
            tags.extend(_tags(value))
    return SesHeaders(b"".join(kept) + body, configuration_set, tuple(tags))


def _tags(value: str) -> list[tuple[str, str]]:
    tags = []
    for item in value.split(","):
        name, equals, tag_value = (part.strip() for part in item.partition("="))
        if not (equals and _TOKEN.fullmatch(name) and _TOKEN.fullmatch(tag_value)):
            message = (
                f"{MESSAGE_TAGS_HEADER}: invalid tag {item.strip()!r} (want name=value, ... with "
                "letters, digits, '_' and '-' only)"
            )
            raise HeaderError(message)
        tags.append((name, tag_value))
    return tags
