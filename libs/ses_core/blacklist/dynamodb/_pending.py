"""Counting soft events (a Transient bounce, say) per address, in the blacklist's own table.

The counts live in the same table as the entries because relays and the Lambda's role know only
that table, and counting needs only the Lambda's existing actions (`UpdateItem`, `GetItem`,
`PutItem`). A new event, or one at least as new as the last counted, is one conditional
`UpdateItem` that also refuses a feedback id already counted; anything else (a duplicate, a late
older event) is decided after a consistent read and written back optimistically.
"""

from __future__ import annotations

import logging
from typing import Any

from ses_core.blacklist._model import BlacklistEvent, OccurrenceTally
from ses_core.blacklist._private import format_time
from ses_core.blacklist.dynamodb._access import TableAccess
from ses_core.blacklist.dynamodb._errors import MAX_WRITE_ATTEMPTS, ConditionFailed, contended
from ses_core.blacklist.dynamodb._items import (
    key,
    pending_key,
    recent_ids,
    remembered,
    tally_from_item,
    tally_to_item,
    unchanged_condition,
)

log = logging.getLogger(__name__)


def count_occurrence(table: TableAccess, event: BlacklistEvent) -> tuple[OccurrenceTally, bool]:
    """Count `event` on its address's pending item: (the tally after it, was it a duplicate)."""
    key_text = pending_key(event.address)
    try:
        response = table.call(
            "UpdateItem",
            conditional=True,
            Key=key(key_text),
            ReturnValues="ALL_NEW",
            **_count_update(event),
        )
    except ConditionFailed:
        return _count_slow(table, event, key_text)
    item: dict[str, Any] = response["Attributes"]
    table.trim_recent(key_text, item)
    return tally_from_item(item), False


def _count_update(event: BlacklistEvent) -> dict[str, Any]:
    """The conditional UpdateItem that counts a new event, or one at least as new as the last."""
    names = {
        "#email": "email",
        "#first": "first_seen",
        "#last": "last_seen",
        "#count": "event_count",
    }
    values: dict[str, Any] = {":ts": {"S": format_time(event.timestamp)}, ":one": {"N": "1"}}
    sets = ["#first = if_not_exists(#first, :ts)", "#last = :ts"]
    condition = "attribute_not_exists(#email) OR (#last <= :ts"
    if event.feedback_id is not None:
        names["#recent"] = "recent_feedback_ids"
        values[":empty"] = {"L": []}
        values[":fids"] = {"L": [{"S": event.feedback_id}]}
        values[":fid"] = {"S": event.feedback_id}
        sets.append("#recent = list_append(if_not_exists(#recent, :empty), :fids)")
        condition += " AND NOT contains(#recent, :fid)"
    condition += ")"
    return {
        "UpdateExpression": "SET " + ", ".join(sets) + " ADD #count :one",
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


def _count_slow(
    table: TableAccess, event: BlacklistEvent, key_text: str
) -> tuple[OccurrenceTally, bool]:
    """Duplicate or older event: read the pending item, decide, write back optimistically."""
    for _ in range(MAX_WRITE_ATTEMPTS):
        item = table.read(key_text)
        recent: list[str] = []
        if item is None:
            # Removed between our two calls: this event is the first again.
            tally = OccurrenceTally.first(event)
            condition = "attribute_not_exists(#email)"
            names = {"#email": "email"}
            values: dict[str, Any] = {}
        else:
            current = tally_from_item(item)
            recent = recent_ids(item)
            if event.feedback_id is not None and event.feedback_id in recent:
                log.info(
                    "occurrence %s for %s already counted; ignoring duplicate",
                    event.feedback_id,
                    event.address,
                )
                return current, True
            tally = current.counted(event)
            condition, names, values = unchanged_condition(item)
        new_item = tally_to_item(key_text, tally, remembered(recent, event.feedback_id))
        try:
            table.put_if(new_item, condition, names, values)
        except ConditionFailed:
            log.debug("concurrent count for %s; retrying", event.address)
            continue
        return tally, False
    raise contended(table.name, f"occurrence count of {event.address}")
