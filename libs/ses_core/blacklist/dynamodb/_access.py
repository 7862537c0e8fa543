"""Every call the blacklist makes to its DynamoDB table, with errors translated on the way out.

The adapter and the occurrence counter share this one object, so that each call translates its
errors the same way (`_errors.py`) and there is one consistent read, one conditional put and one
batch read with retries, not a copy per caller.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any

from botocore import exceptions as botoexc

from ses_core.blacklist.dynamodb._errors import ConditionFailed, is_condition_failure, unavailable
from ses_core.blacklist.dynamodb._items import RECENT_FEEDBACK_IDS, Item, key
from ses_core.errors import BlacklistUnavailable

log = logging.getLogger(__name__)


class TableAccess:
    """Calls to table `name` through the boto3 DynamoDB `client`.

    `sleep`, `max_unprocessed_retries`, `backoff_base` and `backoff_cap` shape the retries of
    `UnprocessedKeys` in `batch_get`; `consistent_lookups` makes those reads strongly consistent.
    """

    def __init__(
        self,
        name: str,
        client: Any,
        *,
        consistent_lookups: bool,
        max_unprocessed_retries: int,
        backoff_base: float,
        backoff_cap: float,
        sleep: Callable[[float], None],
    ) -> None:
        self.name = name
        self.client = client
        self._consistent_lookups = consistent_lookups
        self._max_retries = max_unprocessed_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep

    def call(self, operation: str, *, conditional: bool = False, **kwargs: Any) -> Any:
        """Call `operation` (`"GetItem"`, ...) on the table; `TableName` is added here.

        Raises `ConditionFailed` for a refused condition when `conditional`, and
        `BlacklistUnavailable` for every other failure.
        """
        method = getattr(self.client, _snake_case(operation))
        if operation != "BatchGetItem":
            kwargs["TableName"] = self.name
        try:
            return method(**kwargs)
        except botoexc.ClientError as exc:
            if conditional and is_condition_failure(exc):
                raise ConditionFailed from None
            raise unavailable(self.name, operation, exc) from exc
        except botoexc.BotoCoreError as exc:
            raise unavailable(self.name, operation, exc) from exc

    def read(self, key_text: str) -> dict[str, Any] | None:
        """The item under `key_text`, read consistently (it decides a write), or `None`."""
        response = self.call("GetItem", Key=key(key_text), ConsistentRead=True)
        item: dict[str, Any] | None = response.get("Item")
        return item

    def put_if(
        self,
        item: Mapping[str, Any],
        condition: str,
        names: Mapping[str, str],
        values: Mapping[str, Any] | None = None,
    ) -> None:
        """PutItem under `condition` (optimistic concurrency); raises `ConditionFailed` when
        another writer got there first."""
        kwargs: dict[str, Any] = {
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        self.call("PutItem", conditional=True, **kwargs)

    def batch_get(self, texts: list[str]) -> list[Item]:
        """The items under up to 100 keys; `UnprocessedKeys` are retried with bounded jittered
        backoff, and keys still unprocessed raise `BlacklistUnavailable`."""
        request: dict[str, Any] = {
            self.name: {
                "Keys": [key(text) for text in texts],
                "ConsistentRead": self._consistent_lookups,
            }
        }
        items: list[Item] = []
        for attempt in range(self._max_retries + 1):
            response = self.call("BatchGetItem", RequestItems=request)
            items.extend(response.get("Responses", {}).get(self.name, []))
            unprocessed = response.get("UnprocessedKeys", {}).get(self.name)
            if not unprocessed or not unprocessed.get("Keys"):
                return items
            if attempt == self._max_retries:
                break
            delay = min(self._backoff_cap, self._backoff_base * 2**attempt)
            log.debug(
                "%d keys unprocessed by BatchGetItem on %s; retry in %.3fs",
                len(unprocessed["Keys"]),
                self.name,
                delay,
            )
            # "Full jitter" between half and all of the delay, so replicas do not retry in step.
            self._sleep(delay * (0.5 + random.random() / 2))
            request = {self.name: unprocessed}
        message = (
            f"DynamoDB table {self.name!r}: {len(unprocessed['Keys'])} keys still "
            f"unprocessed by BatchGetItem after {self._max_retries} retries (throttled)"
        )
        raise BlacklistUnavailable(message)

    def trim_recent(self, key_text: str, item: Item) -> None:
        """Keep `recent_feedback_ids` bounded; best effort (the next write trims otherwise)."""
        remembered = len(item.get("recent_feedback_ids", {}).get("L", []))
        excess = remembered - RECENT_FEEDBACK_IDS
        if excess <= 0:
            return
        removes = ", ".join(f"#recent[{i}]" for i in range(excess))
        try:
            self.call(
                "UpdateItem",
                conditional=True,
                Key=key(key_text),
                UpdateExpression=f"REMOVE {removes}",
                ConditionExpression="size(#recent) = :n",
                ExpressionAttributeNames={"#recent": "recent_feedback_ids"},
                ExpressionAttributeValues={":n": {"N": str(remembered)}},
            )
        except ConditionFailed:
            log.debug("recent_feedback_ids of %s changed meanwhile; trim skipped", key_text)
        except BlacklistUnavailable:
            # The event itself is recorded; failing the caller now would only cause a retry
            # that is recognised as a duplicate. Log it (with traceback) and move on.
            log.warning("could not trim recent_feedback_ids of %s", key_text, exc_info=True)


def _snake_case(operation: str) -> str:
    """`BatchGetItem` -> `batch_get_item`: the boto3 method of a DynamoDB operation."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
