"""`DynamoDBBlacklist`: the shared blacklist on a DynamoDB table, with its costs and guarantees.

- `lookup_many` for one message's recipients is ONE `BatchGetItem` (keys deduplicated, chunks of
  100; SES allows at most 50 recipients per message, i.e. at most 100 keys with legacy
  variants), never one `GetItem` per recipient. The relay looks recipients up one RCPT at a
  time, so it puts a `BatchingLookup` in front (told `store_keys`, so that each batch is one
  call): the lookups of concurrent sessions then share `BatchGetItem` calls.
- Legacy keys: the original service stored addresses as written and matched them
  case-sensitively. A lookup asks for the normalised key *and* the bare address exactly as given
  (`Bob@Example.com`) when that differs, in the same `BatchGetItem`; an entry under the
  normalised key wins, and a legacy item is returned under the normalised key. `remove` deletes
  both forms. A legacy item whose case differs from what the relay is given is not found: the
  CLI's `migrate-keys` rewrites legacy items under normalised keys. A legacy item whose key is
  already normalised is upgraded in place by its first event (the legacy sighting counts as one
  event, its `first_seen` stays `UNKNOWN_TIME`, attributes we do not manage are kept).
- `record` is idempotent: one conditional `UpdateItem` that refuses an event whose feedback id
  the item remembers, and applies only an event at least as new as `last_seen`. When refused we
  read the item (consistent read) and decide: a duplicate changes nothing; a distinct older
  event is merged by an optimistic read-modify-write. A duplicate of an event older than the
  last `RECENT_FEEDBACK_IDS` distinct events would count again; an address stops receiving mail
  once blacklisted, so this bound is not reached in practice and keeps items small.
- `record_occurrence` counts in pending items (`_pending.py`); reaching the threshold writes the
  entry with a conditional `PutItem` (`attribute_not_exists`), so the step is safe to retry: a
  redelivery after a failure between the two writes is a duplicate for the count and then writes
  the missing entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from botocore import exceptions as botoexc
from botocore.config import Config

from ses_core.addresses import normalize_address
from ses_core.blacklist._model import (
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    OccurrenceResult,
    OccurrenceTally,
)
from ses_core.blacklist._private import (
    format_time,
    normalize_all,
    require_page_args,
    require_threshold,
)
from ses_core.blacklist.dynamodb._access import TableAccess
from ses_core.blacklist.dynamodb._errors import MAX_WRITE_ATTEMPTS, ConditionFailed, contended
from ses_core.blacklist.dynamodb._items import (
    PENDING_PREFIX,
    Item,
    entry_from_item,
    entry_to_item,
    key,
    legacy_key,
    listed_entry,
    merged_item,
    pending_key,
    read_entry,
    recent_ids,
    remembered,
    unchanged_condition,
)
from ses_core.blacklist.dynamodb._pending import count_occurrence

log = logging.getLogger(__name__)

#: BatchGetItem accepts at most 100 keys per call.
BATCH_GET_LIMIT = 100


class DynamoDBBlacklist:
    """A `Blacklist` on a DynamoDB table (see the module docstring for costs and semantics).

    `client` is a boto3 DynamoDB *client* (thread-safe; `boto3.client("dynamodb")`).
    `sleep` and `max_unprocessed_retries` / `backoff_base` / `backoff_cap` shape the retries of
    `UnprocessedKeys`; tests pass a fake `sleep`. `consistent_reads` makes lookups strongly
    consistent (twice the read cost).

    Attributes:
        table_name: the table.
        client: the boto3 client every call goes through.
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: Any,
        consistent_reads: bool = False,
        max_unprocessed_retries: int = 5,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not table_name:
            raise ValueError("table_name must not be empty")
        self.table_name = table_name
        self.client = client
        self._table = TableAccess(
            table_name,
            client,
            consistent_lookups=consistent_reads,
            max_unprocessed_retries=max_unprocessed_retries,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            sleep=sleep,
        )

    @classmethod
    def from_table_name(
        cls,
        name: str,
        *,
        region: str | None = None,
        client: Any = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        max_pool_connections: int = 32,
    ) -> DynamoDBBlacklist:
        """Build on `client`, or on a new boto3 client with short timeouts and bounded retries.

        A relay must answer its SMTP client in seconds, so the defaults are short: 2 s to
        connect, 5 s to read, 3 attempts in botocore's "standard" retry mode (which also retries
        throttling). `endpoint_url` points at DynamoDB Local or a moto server. Credentials come
        from boto3's usual chain. Raises `ValueError` when no region is configured.
        """
        if client is None:
            import boto3  # deferred: boto3 is slow to import, and tests inject clients

            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                max_pool_connections=max_pool_connections,
            )
            try:
                client = boto3.client(
                    "dynamodb", region_name=region, endpoint_url=endpoint_url, config=config
                )
            except botoexc.NoRegionError:
                message = "no AWS region for DynamoDB: pass region= or set AWS_DEFAULT_REGION"
                raise ValueError(message) from None
        return cls(name, client=client)

    # -- reads -----------------------------------------------------------------------------

    def lookup_many(self, addresses: Iterable[str]) -> dict[str, BlacklistEntry]:
        keys = normalize_all(addresses)
        if not keys:
            return {}
        # candidate DynamoDB key text -> normalised key it answers for
        candidates: dict[str, str] = {}
        for normal, given in keys.items():
            for text in given:
                for candidate in _candidates(normal, text):
                    candidates.setdefault(candidate, normal)
        items: list[Item] = []
        texts = list(candidates)
        for start in range(0, len(texts), BATCH_GET_LIMIT):
            items.extend(self._table.batch_get(texts[start : start + BATCH_GET_LIMIT]))
        found: dict[str, BlacklistEntry] = {}
        for item in items:
            raw = item["email"]["S"]
            normal = candidates[raw]
            if normal in found and raw != normal:
                continue  # the normalised item already answered; a legacy one never overrides
            found[normal] = read_entry(item, normal, self.table_name)
        return found

    def get(self, address: str) -> BlacklistEntry | None:
        return self.lookup_many([address]).get(normalize_address(address))

    def store_keys(self, address: str) -> tuple[str, ...]:
        """The table keys a lookup of `address` asks for (its normalised key, and its legacy
        form when that differs): what it costs of a `BatchGetItem`'s 100 keys, so that a
        `BatchingLookup` can fill a batch that stays one call."""
        return _candidates(normalize_address(address), address)

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        """A `Scan` page, in table order; the cursor is the last scanned key's text.

        Pending items (`record_occurrence` counts) are filtered out, so a page may hold fewer
        entries than `limit` even when more follow.
        """
        require_page_args(limit, cursor)
        kwargs: dict[str, Any] = {
            "Limit": limit,
            "FilterExpression": "NOT begins_with(#email, :pending)",
            "ExpressionAttributeNames": {"#email": "email"},
            "ExpressionAttributeValues": {":pending": {"S": PENDING_PREFIX}},
        }
        if cursor is not None:
            kwargs["ExclusiveStartKey"] = key(cursor)
        response = self._table.call("Scan", **kwargs)
        entries = (listed_entry(item, self.table_name) for item in response.get("Items", []))
        last = response.get("LastEvaluatedKey")
        return BlacklistPage(
            entries=tuple(entry for entry in entries if entry is not None),
            next_cursor=last["email"]["S"] if last else None,
        )

    # -- writes ----------------------------------------------------------------------------

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        try:
            response = self._table.call(
                "UpdateItem",
                conditional=True,
                Key=key(event.address),
                ReturnValues="ALL_NEW",
                **_record_update(event),
            )
        except ConditionFailed:
            return self._record_slow(event)
        item: dict[str, Any] = response["Attributes"]
        self._table.trim_recent(event.address, item)
        return entry_from_item(item)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        require_threshold(threshold)
        tally, duplicate = count_occurrence(self._table, event)
        result = OccurrenceResult(event.address, tally.count, threshold, duplicate, entry=None)
        if tally.count < threshold:
            return result
        entry = self._blacklist_at_threshold(event, tally, duplicate)
        return OccurrenceResult(event.address, tally.count, threshold, duplicate, entry=entry)

    def put(self, entry: BlacklistEntry) -> None:
        self._table.call("PutItem", Item=entry_to_item(entry))

    def remove(self, address: str) -> bool:
        normal = normalize_address(address)
        texts = [normal]
        legacy = legacy_key(address)
        if legacy != normal and "@" in legacy:
            texts.append(legacy)
        removed = False
        for text in texts:
            response = self._table.call("DeleteItem", Key=key(text), ReturnValues="ALL_OLD")
            removed = removed or bool(response.get("Attributes"))
        self._table.call("DeleteItem", Key=key(pending_key(normal)))
        return removed

    # -- internals -------------------------------------------------------------------------

    def _record_slow(self, event: BlacklistEvent) -> BlacklistEntry:
        """Duplicate, older event, or legacy item: read, decide, write back optimistically."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            item = self._table.read(event.address)
            if item is None:
                # Removed between our two calls: write the event as a new item.
                new_item = entry_to_item(BlacklistEntry.from_event(event))
                condition = "attribute_not_exists(#email)"
                names = {"#email": "email"}
                values: dict[str, Any] = {}
            else:
                current = read_entry(item, event.address, self.table_name)
                recent = recent_ids(item)
                fid = event.feedback_id
                if fid is not None and (fid in recent or current.feedback_id == fid):
                    log.info(
                        "feedback %s for %s already recorded; ignoring duplicate",
                        fid,
                        event.address,
                    )
                    return current
                new_item = merged_item(item, current.merged_with(event), remembered(recent, fid))
                condition, names, values = unchanged_condition(item)
            try:
                self._table.put_if(new_item, condition, names, values)
            except ConditionFailed:
                log.debug("concurrent update of %s; retrying", event.address)
                continue
            return entry_from_item(new_item)
        raise contended(self.table_name, f"item for {event.address}")

    def _blacklist_at_threshold(
        self, event: BlacklistEvent, tally: OccurrenceTally, duplicate: bool
    ) -> BlacklistEntry:
        """The count reached the threshold: create the entry, or merge into an existing one."""
        created = tally.entry_for(event)
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                self._table.put_if(
                    entry_to_item(created), "attribute_not_exists(#email)", {"#email": "email"}
                )
            except ConditionFailed:
                pass
            else:
                return created
            if not duplicate:
                # A distinct event beyond the threshold: merged like any recorded event.
                return self.record(event)
            # A redelivered event: it already counted, so the entry is left as it is.
            item = self._table.read(event.address)
            if item is not None:
                return read_entry(item, event.address, self.table_name)
        raise contended(self.table_name, f"entry for {event.address}")


def _candidates(normal: str, text: str) -> tuple[str, ...]:
    """The keys to read for `text`, whose normalised key is `normal`: that key, and the bare
    address as written when it differs (the original service's case-sensitive key)."""
    legacy = legacy_key(text)
    # A valid address never looks like a pending key; the check makes it certain.
    if legacy != normal and "@" in legacy and not legacy.startswith(PENDING_PREFIX):
        return (normal, legacy)
    return (normal,)


def _record_update(event: BlacklistEvent) -> dict[str, Any]:
    """The conditional UpdateItem of the common case: a new item, or a newer event. A legacy
    item (no `event_count`), an older event or a remembered feedback id is refused."""
    names = {
        "#email": "email",
        "#reason": "reason",
        "#first": "first_seen",
        "#last": "last_seen",
        "#count": "event_count",
    }
    values: dict[str, Any] = {
        ":reason": {"S": str(event.reason)},
        ":ts": {"S": format_time(event.timestamp)},
        ":one": {"N": "1"},
    }
    sets = ["#reason = :reason", "#first = if_not_exists(#first, :ts)", "#last = :ts"]
    removes = []
    for name, attribute, value in (
        ("#detail", "detail", event.detail),
        ("#fid", "last_feedback_id", event.feedback_id),
        ("#mid", "last_message_id", event.message_id),
    ):
        names[name] = attribute
        if value is None:
            removes.append(name)
        else:
            values[":" + name[1:]] = {"S": value}
            sets.append(f"{name} = :{name[1:]}")
    condition = "attribute_not_exists(#email) OR (#last <= :ts AND attribute_exists(#count)"
    if event.feedback_id is not None:
        names["#recent"] = "recent_feedback_ids"
        values[":empty"] = {"L": []}
        values[":fids"] = {"L": [{"S": event.feedback_id}]}
        sets.append("#recent = list_append(if_not_exists(#recent, :empty), :fids)")
        condition += (
            " AND NOT contains(#recent, :fid) AND (attribute_not_exists(#fid) OR #fid <> :fid)"
        )
    condition += ")"
    expression = "SET " + ", ".join(sets)
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    expression += " ADD #count :one"
    return {
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
