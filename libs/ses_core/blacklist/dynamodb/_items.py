"""How blacklist entries and occurrence counts are laid out as DynamoDB items.

An entry item: `email` (S, hash key: the normalised address), `reason` (S), `detail` (S),
`last_feedback_id` (S), `last_message_id` (S), `first_seen` / `last_seen` (S, ISO-8601 UTC, fixed
width so they sort in time order), `event_count` (N), and `recent_feedback_ids` (L of S: the last
`RECENT_FEEDBACK_IDS` feedback ids, the idempotency memory). Absent values are omitted. Items
written by the original service hold only `email` (possibly mixed-case): they read as `IMPORTED`,
seen once at `UNKNOWN_TIME`.

A pending item counts the soft events of one address under `PENDING_PREFIX` + normalised key
(`<pending>bob@example.com`) and holds `event_count`, `first_seen`, `last_seen` and
`recent_feedback_ids`. No normalised address starts with `<`, so a pending item is never
mistaken for an address, by this code or by the original service's relays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ses_core.addresses import normalize_address
from ses_core.blacklist._model import UNKNOWN_TIME, BlacklistEntry, BlacklistReason, OccurrenceTally
from ses_core.blacklist._private import format_time, parse_time
from ses_core.errors import InvalidAddress

log = logging.getLogger(__name__)

Item = Mapping[str, Mapping[str, Any]]

#: How many feedback ids an item remembers for idempotency.
RECENT_FEEDBACK_IDS = 32
#: Key prefix of the items counting soft events; no normalised address starts with `<`.
PENDING_PREFIX = "<pending>"
#: Attributes this package manages; anything else on an item (a TTL, an operator's note) is kept.
MANAGED = (
    "reason",
    "detail",
    "last_feedback_id",
    "last_message_id",
    "first_seen",
    "last_seen",
    "event_count",
    "recent_feedback_ids",
)


def key(text: str) -> dict[str, dict[str, str]]:
    """The primary key of the item stored under `text`."""
    return {"email": {"S": text}}


def entry_from_item(item: Item) -> BlacklistEntry:
    """Read an entry item (low-level client form: `{"email": {"S": ...}, ...}`).

    A legacy item (only `email`) or an unknown `reason` (written by a newer version) reads as
    `IMPORTED`. Raises `InvalidAddress` when `email` is not a valid address and `ValueError`
    when the item has no string `email`.
    """
    address = _str(item, "email")
    if address is None:
        raise ValueError("DynamoDB item has no string 'email' attribute")
    reason_text = _str(item, "reason")
    try:
        reason = BlacklistReason(reason_text) if reason_text else BlacklistReason.IMPORTED
    except ValueError:
        log.debug("unknown blacklist reason %r for %r; reading as imported", reason_text, address)
        reason = BlacklistReason.IMPORTED
    first_text = _str(item, "first_seen")
    last_text = _str(item, "last_seen")
    first_seen = parse_time(first_text) if first_text else None
    last_seen = parse_time(last_text) if last_text else None
    first_seen = first_seen or last_seen or UNKNOWN_TIME
    last_seen = last_seen or first_seen
    count_attr = item.get("event_count", {})
    count = int(count_attr["N"]) if "N" in count_attr else 1
    return BlacklistEntry(
        address=address,
        reason=reason,
        detail=_str(item, "detail"),
        feedback_id=_str(item, "last_feedback_id"),
        message_id=_str(item, "last_message_id"),
        first_seen=first_seen,
        last_seen=last_seen,
        count=max(count, 1),
    )


def entry_to_item(entry: BlacklistEntry) -> dict[str, dict[str, Any]]:
    """The entry item that stores `entry`; its feedback id starts the idempotency memory."""
    item: dict[str, dict[str, Any]] = {
        "email": {"S": entry.address},
        "reason": {"S": str(entry.reason)},
        "first_seen": {"S": format_time(entry.first_seen)},
        "last_seen": {"S": format_time(entry.last_seen)},
        "event_count": {"N": str(entry.count)},
    }
    if entry.detail is not None:
        item["detail"] = {"S": entry.detail}
    if entry.feedback_id is not None:
        item["last_feedback_id"] = {"S": entry.feedback_id}
        item["recent_feedback_ids"] = {"L": [{"S": entry.feedback_id}]}
    if entry.message_id is not None:
        item["last_message_id"] = {"S": entry.message_id}
    return item


def read_entry(item: Item, address: str, table: str) -> BlacklistEntry:
    """Read the item found for `address`; a damaged item still blacklists it (never a miss)."""
    try:
        return entry_from_item(item)
    except (InvalidAddress, ValueError, KeyError, TypeError):
        # Deliberately broad: whatever is wrong with the other attributes, the address is in
        # the table, so it is blacklisted. Logged with traceback for the operator.
        log.warning(
            "damaged blacklist item %r in %s; reading it as imported",
            item.get("email"),
            table,
            exc_info=True,
        )
        return BlacklistEntry(
            address=address,
            reason=BlacklistReason.IMPORTED,
            detail=None,
            feedback_id=None,
            message_id=None,
            first_seen=UNKNOWN_TIME,
            last_seen=UNKNOWN_TIME,
        )


def listed_entry(item: Item, table: str) -> BlacklistEntry | None:
    """For listings: `None` for a pending item, or for an item whose key is not an address at
    all (junk left by the original service), which no valid recipient can match."""
    raw = item.get("email", {}).get("S")
    if str(raw or "").startswith(PENDING_PREFIX):
        return None
    try:
        address = normalize_address(str(raw))
    except InvalidAddress:
        log.warning("ignoring blacklist item with key %r in %s", raw, table)
        return None
    return read_entry(item, address, table)


def merged_item(item: Item, merged: BlacklistEntry, recent: list[str]) -> dict[str, Any]:
    """`item` rewritten to hold `merged` and `recent`, keeping attributes we do not manage."""
    new_item = {name: value for name, value in item.items() if name not in MANAGED}
    new_item.update(entry_to_item(merged))
    if recent:
        new_item["recent_feedback_ids"] = {"L": [{"S": fid} for fid in recent]}
    else:
        new_item.pop("recent_feedback_ids", None)
    return new_item


def recent_ids(item: Item) -> list[str]:
    """The feedback ids an item remembers, oldest first."""
    return [value["S"] for value in item.get("recent_feedback_ids", {}).get("L", [])]


def remembered(recent: list[str], feedback_id: str | None) -> list[str]:
    """`recent` after one more feedback id, bounded to the last `RECENT_FEEDBACK_IDS`."""
    if feedback_id is None:
        return recent
    return (recent + [feedback_id])[-RECENT_FEEDBACK_IDS:]


def pending_key(address: str) -> str:
    """The key of the item counting the soft events of the normalised `address`."""
    return PENDING_PREFIX + address


def tally_from_item(item: Item) -> OccurrenceTally:
    """Read a pending item."""
    return OccurrenceTally(
        count=int(item["event_count"]["N"]),
        first_seen=parse_time(item["first_seen"]["S"]),
        last_seen=parse_time(item["last_seen"]["S"]),
    )


def tally_to_item(key_text: str, tally: OccurrenceTally, recent: list[str]) -> dict[str, Any]:
    """The pending item stored under `key_text` for `tally` and its remembered feedback ids."""
    item: dict[str, Any] = {
        "email": {"S": key_text},
        "event_count": {"N": str(tally.count)},
        "first_seen": {"S": format_time(tally.first_seen)},
        "last_seen": {"S": format_time(tally.last_seen)},
    }
    if recent:
        item["recent_feedback_ids"] = {"L": [{"S": fid} for fid in recent]}
    return item


def unchanged_condition(item: Item) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A write condition that holds only while the item is still the one we read."""
    if "event_count" not in item:
        names = {"#email": "email", "#count": "event_count"}
        return "attribute_exists(#email) AND attribute_not_exists(#count)", names, {}
    if "last_seen" not in item:
        names = {"#count": "event_count", "#last": "last_seen"}
        return (
            "#count = :count AND attribute_not_exists(#last)",
            names,
            {":count": item["event_count"]},
        )
    names = {"#count": "event_count", "#last": "last_seen"}
    values = {":count": item["event_count"], ":last": item["last_seen"]}
    return "#count = :count AND #last = :last", names, values


def legacy_key(text: str) -> str:
    """The bare address as written (`"N" <Bob@X.org>` -> `Bob@X.org`): the original service's
    key for it, which it matched case-sensitively."""
    bare = text.strip()
    if bare.endswith(">") and "<" in bare:
        bare = bare[bare.rfind("<") + 1 : -1].strip()
    return bare


def _str(item: Item, name: str) -> str | None:
    value = item.get(name)
    if not value or "S" not in value:
        return None
    text = value["S"]
    return text if isinstance(text, str) else None
