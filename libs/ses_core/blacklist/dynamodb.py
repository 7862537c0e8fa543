"""The shared blacklist in a DynamoDB table, compatible with the original service's tables.

Table: string hash key `email`, nothing else required (on-demand billing recommended). Items
written by the original service hold only `email`; they read as `IMPORTED` entries (see
`BlacklistEntry.from_item`). A legacy item whose key is already normalised (lower-case) is
upgraded in place the first time an event is recorded for it (the legacy sighting counts as one
event, its `first_seen` stays `UNKNOWN_TIME`, attributes we do not manage are kept); events for a
mixed-case legacy key create a new item under the normalised key, which then shadows the legacy
one. The item layout is documented on `BlacklistEntry.to_item`.

Costs and guarantees:
- `lookup_many` for one message's recipients is ONE `BatchGetItem` (keys deduplicated, chunks of
  100; SES allows at most 50 recipients per message, i.e. at most 100 keys with legacy variants).
  `UnprocessedKeys` are retried with bounded exponential backoff; keys still unprocessed raise
  `BlacklistUnavailable`. Never one `GetItem` per recipient.
- Legacy mixed-case keys: the original service stored addresses as written and matched them
  case-sensitively. We store normalised keys, and a lookup asks for the normalised key *and* the
  bare address exactly as given (`Bob@Example.com`) when that differs, in the same
  `BatchGetItem`. An entry under the normalised key wins over a legacy one; a legacy item is
  returned under the normalised key. `remove` deletes both forms. A legacy item whose case
  differs from what the relay is given (stored `BOB@example.com`, asked `Bob@example.com`) is
  not found: run the CLI import once to rewrite legacy items under normalised keys.
- `record` is idempotent: one conditional `UpdateItem` that refuses an event whose feedback id
  is among the item's `recent_feedback_ids` (the last `RECENT_FEEDBACK_IDS` recorded) or is its
  `last_feedback_id`. `ConditionalCheckFailedException` means "already recorded" or "not the fast
  case": we then read the item (consistent read) and decide in Python.
- Older events: the fast path only applies an event at least as new as `last_seen`. A
  *duplicate* of an older event is recognised through `recent_feedback_ids` and changes nothing;
  a *distinct* older event (out-of-order delivery) is merged by an optimistic read-modify-write
  (`count` + 1, `first_seen` possibly earlier, the latest event's fields kept). A duplicate of an
  event older than the last `RECENT_FEEDBACK_IDS` distinct events of the same address would be
  counted again; an address stops receiving mail (and so events) once blacklisted, so this
  bound is not reached in practice and keeps items small.
- `record_occurrence` keeps its counts in the SAME table (relays and the Lambda's role know only
  that table), one item per address under the key `PENDING_PREFIX` + normalised key, e.g.
  `<pending>bob@example.com`. A normalised key never starts with `<`, so a pending item can
  never be mistaken for an address: this module's lookups never ask for such a key and
  `list_page` filters them out, and the original service's relays (which treat any item whose
  `email` equals the recipient as blacklisted) never ask for it either. A pending item holds
  `event_count`, `first_seen`, `last_seen` and `recent_feedback_ids`, counted with the same
  conditional `UpdateItem` as `record` (an older event or a refused duplicate goes through a
  consistent read). Reaching the threshold writes the entry with a conditional `PutItem`
  (`attribute_not_exists`), so the step is safe to retry: a redelivery after a failure between
  the two writes is a duplicate for the count and then writes the missing entry. Only the
  Lambda's existing actions are needed (`UpdateItem`, `GetItem`, `PutItem`); `remove` (an
  operator action, `DeleteItem`) deletes the pending item with the entry.
- Every client or transport error (throttling, missing table, bad credentials, unreachable
  endpoint, timeouts) raises `BlacklistUnavailable`: never read as "not blacklisted".
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from botocore import exceptions as botoexc
from botocore.config import Config

from ses_core.addresses import normalize_address
from ses_core.blacklist.model import (
    UNKNOWN_TIME,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    BlacklistReason,
    OccurrenceResult,
    OccurrenceTally,
    check_page_args,
    check_threshold,
    format_time,
    normalize_all,
    parse_time,
)
from ses_core.errors import BlacklistUnavailable, InvalidAddress

log = logging.getLogger(__name__)

#: BatchGetItem accepts at most 100 keys per call.
BATCH_GET_LIMIT = 100
#: How many feedback ids an item remembers for idempotency.
RECENT_FEEDBACK_IDS = 32
#: Key read by `check`; it has no `@`, so it can never collide with an address.
PROBE_KEY = "ses-relay-readiness-probe"
#: Attempts of the optimistic read-modify-write path before giving up as contended.
MAX_WRITE_ATTEMPTS = 5
#: Key prefix of the items counting soft events; no normalised address starts with `<`.
PENDING_PREFIX = "<pending>"

_THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "Throttling",
        "TooManyRequestsException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "AccessDeniedException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
    }
)
_CONDITION_FAILED = "ConditionalCheckFailedException"
# Attributes this module manages; anything else on an item (a TTL, an operator's note) is kept.
_MANAGED = (
    "reason",
    "detail",
    "last_feedback_id",
    "last_message_id",
    "first_seen",
    "last_seen",
    "event_count",
    "recent_feedback_ids",
)


class _ConditionFailed(Exception):
    """Internal: a conditional write was refused."""


class DynamoDBBlacklist:
    """A `Blacklist` on a DynamoDB table (see the module docstring for costs and semantics).

    `client` is a boto3 DynamoDB *client* (thread-safe; `boto3.client("dynamodb")`).
    `sleep` and `max_unprocessed_retries` / `backoff_base` / `backoff_cap` shape the retries of
    `UnprocessedKeys`; tests pass a fake `sleep`. `consistent_reads` makes lookups strongly
    consistent (twice the read cost).
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
        self._client = client
        self._consistent = consistent_reads
        self._max_retries = max_unprocessed_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep

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
            import boto3  # deferred: importing boto3 costs ~100 ms, and tests inject clients

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
        for key, given in keys.items():
            candidates.setdefault(key, key)
            for text in given:
                legacy = _bare(text)
                # A valid address never looks like a pending key; the check makes it certain.
                if legacy != key and "@" in legacy and not legacy.startswith(PENDING_PREFIX):
                    candidates.setdefault(legacy, key)
        items: list[Mapping[str, Any]] = []
        texts = list(candidates)
        for start in range(0, len(texts), BATCH_GET_LIMIT):
            items.extend(self._batch_get(texts[start : start + BATCH_GET_LIMIT]))
        found: dict[str, BlacklistEntry] = {}
        for item in items:
            raw = item["email"]["S"]
            key = candidates[raw]
            if key in found and raw != key:
                continue  # the normalised item already answered; a legacy one never overrides
            found[key] = self._entry_for(item, key)
        return found

    def get(self, address: str) -> BlacklistEntry | None:
        key = normalize_address(address)
        return self.lookup_many([address]).get(key)

    def list_page(self, *, limit: int = 100, cursor: str | None = None) -> BlacklistPage:
        """A `Scan` page, in table order; the cursor is the last scanned key's text.

        Pending items (`record_occurrence` counts) are filtered out, so a page may hold fewer
        entries than `limit` even when more follow.
        """
        check_page_args(limit, cursor)
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Limit": limit,
            "FilterExpression": "NOT begins_with(#email, :pending)",
            "ExpressionAttributeNames": {"#email": "email"},
            "ExpressionAttributeValues": {":pending": {"S": PENDING_PREFIX}},
        }
        if cursor is not None:
            kwargs["ExclusiveStartKey"] = {"email": {"S": cursor}}
        response = self._call("Scan", self._client.scan, **kwargs)
        entries = [
            self._entry_or_none(item)
            for item in response.get("Items", [])
            if not str(item.get("email", {}).get("S", "")).startswith(PENDING_PREFIX)
        ]
        last = response.get("LastEvaluatedKey")
        next_cursor = last["email"]["S"] if last else None
        return BlacklistPage(
            entries=tuple(e for e in entries if e is not None), next_cursor=next_cursor
        )

    def check(self) -> None:
        """Readiness probe: one cheap `GetItem` of a key no address can have.

        Needs only the relays' read permission (not `DescribeTable`); raises
        `BlacklistUnavailable` when the table cannot be read.
        """
        self._call(
            "GetItem",
            self._client.get_item,
            TableName=self.table_name,
            Key={"email": {"S": PROBE_KEY}},
        )

    # -- writes ----------------------------------------------------------------------------

    def record(self, event: BlacklistEvent) -> BlacklistEntry:
        try:
            item = self._record_fast(event)
        except _ConditionFailed:
            return self._record_slow(event)
        self._trim_recent(event.address, item)
        return BlacklistEntry.from_item(item)

    def record_occurrence(self, event: BlacklistEvent, *, threshold: int) -> OccurrenceResult:
        check_threshold(threshold)
        tally, duplicate = self._count(event)
        result = OccurrenceResult(event.address, tally.count, threshold, duplicate, entry=None)
        if tally.count < threshold:
            return result
        entry = self._blacklist_at_threshold(event, tally, duplicate)
        return OccurrenceResult(event.address, tally.count, threshold, duplicate, entry=entry)

    def put(self, entry: BlacklistEntry) -> None:
        self._call(
            "PutItem", self._client.put_item, TableName=self.table_name, Item=entry.to_item()
        )

    def remove(self, address: str) -> bool:
        key = normalize_address(address)
        texts = [key]
        legacy = _bare(address)
        if legacy != key and "@" in legacy:
            texts.append(legacy)
        removed = False
        for text in texts:
            response = self._call(
                "DeleteItem",
                self._client.delete_item,
                TableName=self.table_name,
                Key={"email": {"S": text}},
                ReturnValues="ALL_OLD",
            )
            removed = removed or bool(response.get("Attributes"))
        self._call(
            "DeleteItem",
            self._client.delete_item,
            TableName=self.table_name,
            Key={"email": {"S": PENDING_PREFIX + key}},
        )
        return removed

    # -- internals -------------------------------------------------------------------------

    def _batch_get(self, texts: list[str]) -> list[Mapping[str, Any]]:
        request: dict[str, Any] = {
            self.table_name: {
                "Keys": [{"email": {"S": text}} for text in texts],
                "ConsistentRead": self._consistent,
            }
        }
        items: list[Mapping[str, Any]] = []
        for attempt in range(self._max_retries + 1):
            response = self._call("BatchGetItem", self._client.batch_get_item, RequestItems=request)
            items.extend(response.get("Responses", {}).get(self.table_name, []))
            unprocessed = response.get("UnprocessedKeys", {}).get(self.table_name)
            if not unprocessed or not unprocessed.get("Keys"):
                return items
            if attempt == self._max_retries:
                break
            delay = min(self._backoff_cap, self._backoff_base * 2**attempt)
            log.debug(
                "%d keys unprocessed by BatchGetItem on %s; retry in %.3fs",
                len(unprocessed["Keys"]),
                self.table_name,
                delay,
            )
            # "Full jitter" between half and all of the delay, so replicas do not retry in step.
            self._sleep(delay * (0.5 + random.random() / 2))
            request = {self.table_name: unprocessed}
        message = (
            f"DynamoDB table {self.table_name!r}: {len(unprocessed['Keys'])} keys still "
            f"unprocessed by BatchGetItem after {self._max_retries} retries (throttled)"
        )
        raise BlacklistUnavailable(message)

    def _record_fast(self, event: BlacklistEvent) -> dict[str, Any]:
        """One conditional UpdateItem for the common case: a new item, or a newer event."""
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
        sets = [
            "#reason = :reason",
            "#first = if_not_exists(#first, :ts)",
            "#last = :ts",
        ]
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
        # A legacy item (no event_count) or an older event goes to the slow path.
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
        response = self._call(
            "UpdateItem",
            self._client.update_item,
            conditional=True,
            TableName=self.table_name,
            Key={"email": {"S": event.address}},
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        attributes: dict[str, Any] = response["Attributes"]
        return attributes

    def _record_slow(self, event: BlacklistEvent) -> BlacklistEntry:
        """Duplicate, older event, or legacy item: read, decide, write back optimistically."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            response = self._call(
                "GetItem",
                self._client.get_item,
                TableName=self.table_name,
                Key={"email": {"S": event.address}},
                ConsistentRead=True,
            )
            item: dict[str, Any] | None = response.get("Item")
            if item is None:
                # Removed between our two calls: write the event as a new item.
                new_item = BlacklistEntry.from_event(event).to_item()
                condition = "attribute_not_exists(#email)"
                names = {"#email": "email"}
                values: dict[str, Any] = {}
            else:
                current = self._entry_for(item, event.address)
                recent = [v["S"] for v in item.get("recent_feedback_ids", {}).get("L", [])]
                fid = event.feedback_id
                if fid is not None and (fid in recent or current.feedback_id == fid):
                    log.info(
                        "feedback %s for %s already recorded; ignoring duplicate",
                        fid,
                        event.address,
                    )
                    return current
                merged = current.merged_with(event)
                new_item = {k: v for k, v in item.items() if k not in _MANAGED}
                new_item.update(merged.to_item())
                if fid is not None:
                    recent = (recent + [fid])[-RECENT_FEEDBACK_IDS:]
                if recent:
                    new_item["recent_feedback_ids"] = {"L": [{"S": v} for v in recent]}
                else:
                    new_item.pop("recent_feedback_ids", None)
                condition, names, values = _unchanged_condition(item)
            try:
                self._put_if(new_item, condition, names, values)
            except _ConditionFailed:
                log.debug("concurrent update of %s; retrying", event.address)
                continue
            return BlacklistEntry.from_item(new_item)
        message = (
            f"DynamoDB table {self.table_name!r}: item for {event.address} kept changing; "
            f"gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )
        raise BlacklistUnavailable(message)

    def _count(self, event: BlacklistEvent) -> tuple[OccurrenceTally, bool]:
        """Count `event` on the address's pending item: (the tally after it, was it a duplicate)."""
        key = PENDING_PREFIX + event.address
        names = {
            "#email": "email",
            "#first": "first_seen",
            "#last": "last_seen",
            "#count": "event_count",
        }
        values: dict[str, Any] = {":ts": {"S": format_time(event.timestamp)}, ":one": {"N": "1"}}
        sets = ["#first = if_not_exists(#first, :ts)", "#last = :ts"]
        # Only a new item or an event at least as new as the last one takes the fast path.
        condition = "attribute_not_exists(#email) OR (#last <= :ts"
        if event.feedback_id is not None:
            names["#recent"] = "recent_feedback_ids"
            values[":empty"] = {"L": []}
            values[":fids"] = {"L": [{"S": event.feedback_id}]}
            values[":fid"] = {"S": event.feedback_id}
            sets.append("#recent = list_append(if_not_exists(#recent, :empty), :fids)")
            condition += " AND NOT contains(#recent, :fid)"
        condition += ")"
        try:
            response = self._call(
                "UpdateItem",
                self._client.update_item,
                conditional=True,
                TableName=self.table_name,
                Key={"email": {"S": key}},
                UpdateExpression="SET " + ", ".join(sets) + " ADD #count :one",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except _ConditionFailed:
            return self._count_slow(event, key)
        item: dict[str, Any] = response["Attributes"]
        self._trim_recent(key, item)
        return _tally(item), False

    def _count_slow(self, event: BlacklistEvent, key: str) -> tuple[OccurrenceTally, bool]:
        """Duplicate or older event: read the pending item, decide, write back optimistically."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            response = self._call(
                "GetItem",
                self._client.get_item,
                TableName=self.table_name,
                Key={"email": {"S": key}},
                ConsistentRead=True,
            )
            item: dict[str, Any] | None = response.get("Item")
            recent: list[str] = []
            if item is None:
                # Removed between our two calls: this event is the first again.
                tally = OccurrenceTally.first(event)
                condition = "attribute_not_exists(#email)"
                names = {"#email": "email"}
                values: dict[str, Any] = {}
            else:
                current = _tally(item)
                recent = [v["S"] for v in item.get("recent_feedback_ids", {}).get("L", [])]
                if event.feedback_id is not None and event.feedback_id in recent:
                    log.info(
                        "occurrence %s for %s already counted; ignoring duplicate",
                        event.feedback_id,
                        event.address,
                    )
                    return current, True
                tally = current.counted(event)
                condition, names, values = _unchanged_condition(item)
            if event.feedback_id is not None:
                recent = (recent + [event.feedback_id])[-RECENT_FEEDBACK_IDS:]
            new_item: dict[str, Any] = {
                "email": {"S": key},
                "event_count": {"N": str(tally.count)},
                "first_seen": {"S": format_time(tally.first_seen)},
                "last_seen": {"S": format_time(tally.last_seen)},
            }
            if recent:
                new_item["recent_feedback_ids"] = {"L": [{"S": v} for v in recent]}
            try:
                self._put_if(new_item, condition, names, values)
            except _ConditionFailed:
                log.debug("concurrent count for %s; retrying", event.address)
                continue
            return tally, False
        message = (
            f"DynamoDB table {self.table_name!r}: occurrence count of {event.address} kept "
            f"changing; gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )
        raise BlacklistUnavailable(message)

    def _blacklist_at_threshold(
        self, event: BlacklistEvent, tally: OccurrenceTally, duplicate: bool
    ) -> BlacklistEntry:
        """The count reached the threshold: create the entry, or merge into an existing one."""
        created = tally.entry_for(event)
        for _ in range(MAX_WRITE_ATTEMPTS):
            try:
                self._call(
                    "PutItem",
                    self._client.put_item,
                    conditional=True,
                    TableName=self.table_name,
                    Item=created.to_item(),
                    ConditionExpression="attribute_not_exists(#email)",
                    ExpressionAttributeNames={"#email": "email"},
                )
            except _ConditionFailed:
                pass
            else:
                return created
            if not duplicate:
                # A distinct event beyond the threshold: merged like any recorded event.
                return self.record(event)
            # A redelivered event: it already counted, so the entry is left as it is.
            response = self._call(
                "GetItem",
                self._client.get_item,
                TableName=self.table_name,
                Key={"email": {"S": event.address}},
                ConsistentRead=True,
            )
            item = response.get("Item")
            if item is not None:
                return self._entry_for(item, event.address)
        message = (
            f"DynamoDB table {self.table_name!r}: entry for {event.address} kept changing; "
            f"gave up after {MAX_WRITE_ATTEMPTS} attempts"
        )
        raise BlacklistUnavailable(message)

    def _trim_recent(self, address: str, item: Mapping[str, Any]) -> None:
        """Keep `recent_feedback_ids` bounded; best effort (the next write trims otherwise)."""
        recent = item.get("recent_feedback_ids", {}).get("L", [])
        excess = len(recent) - RECENT_FEEDBACK_IDS
        if excess <= 0:
            return
        removes = ", ".join(f"#recent[{i}]" for i in range(excess))
        try:
            self._call(
                "UpdateItem",
                self._client.update_item,
                conditional=True,
                TableName=self.table_name,
                Key={"email": {"S": address}},
                UpdateExpression=f"REMOVE {removes}",
                ConditionExpression="size(#recent) = :n",
                ExpressionAttributeNames={"#recent": "recent_feedback_ids"},
                ExpressionAttributeValues={":n": {"N": str(len(recent))}},
            )
        except _ConditionFailed:
            log.debug("recent_feedback_ids of %s changed meanwhile; trim skipped", address)
        except BlacklistUnavailable:
            # The event itself is recorded; failing the caller now would only cause a retry
            # that is recognised as a duplicate. Log it (with traceback) and move on.
            log.warning("could not trim recent_feedback_ids of %s", address, exc_info=True)

    def _entry_or_none(self, item: Mapping[str, Any]) -> BlacklistEntry | None:
        """For listings: `None` only for an item whose key is not an address at all (junk left
        by the original service), which no valid recipient can match."""
        raw = item.get("email", {}).get("S")
        try:
            key = normalize_address(str(raw))
        except InvalidAddress:
            log.warning("ignoring blacklist item with key %r in %s", raw, self.table_name)
            return None
        return self._entry_for(item, key)

    def _entry_for(self, item: Mapping[str, Any], key: str) -> BlacklistEntry:
        """Read the item found for `key`; a damaged item still blacklists it (never a miss)."""
        try:
            return BlacklistEntry.from_item(item)
        except (InvalidAddress, ValueError, KeyError, TypeError):
            # Deliberately broad: whatever is wrong with the other attributes, the address is
            # in the table, so it is blacklisted. Logged with traceback for the operator.
            log.warning(
                "damaged blacklist item %r in %s; reading it as imported",
                item.get("email"),
                self.table_name,
                exc_info=True,
            )
            return BlacklistEntry(
                address=key,
                reason=BlacklistReason.IMPORTED,
                detail=None,
                feedback_id=None,
                message_id=None,
                first_seen=UNKNOWN_TIME,
                last_seen=UNKNOWN_TIME,
            )

    def _put_if(
        self,
        item: dict[str, Any],
        condition: str,
        names: dict[str, str],
        values: Mapping[str, Any],
    ) -> None:
        """PutItem under `condition` (optimistic concurrency); raises `_ConditionFailed` when
        another writer got there first."""
        kwargs: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        self._call("PutItem", self._client.put_item, conditional=True, **kwargs)

    def _call(
        self,
        operation: str,
        method: Callable[..., Any],
        *,
        conditional: bool = False,
        **kwargs: Any,
    ) -> Any:
        try:
            return method(**kwargs)
        except botoexc.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            if conditional and code == _CONDITION_FAILED:
                raise _ConditionFailed from None
            message = (
                f"DynamoDB table {self.table_name!r}: {operation} failed, "
                f"{_describe(code)} ({code}: {error.get('Message', '')})"
            )
            raise BlacklistUnavailable(message) from exc
        except botoexc.BotoCoreError as exc:
            if isinstance(exc, botoexc.NoCredentialsError | botoexc.PartialCredentialsError):
                kind = "no usable AWS credentials"
            elif isinstance(exc, botoexc.ConnectionError | botoexc.HTTPClientError):
                kind = "endpoint unreachable or timed out"
            else:
                kind = "client error"
            message = f"DynamoDB table {self.table_name!r}: {operation} failed, {kind} ({exc})"
            raise BlacklistUnavailable(message) from exc


def _describe(code: str) -> str:
    if code in _THROTTLING_CODES:
        return "throttled"
    if code == "ResourceNotFoundException":
        return "table not found"
    if code in _CREDENTIAL_CODES:
        return "credentials or permissions rejected"
    return "service error"


def _unchanged_condition(
    item: Mapping[str, Any],
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A condition that holds only while the item is still the one we read."""
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


def _tally(item: Mapping[str, Any]) -> OccurrenceTally:
    """Read a pending item written by `_count` / `_count_slow`."""
    return OccurrenceTally(
        count=int(item["event_count"]["N"]),
        first_seen=parse_time(item["first_seen"]["S"]),
        last_seen=parse_time(item["last_seen"]["S"]),
    )


def _bare(text: str) -> str:
    """The bare address as written (`"N" <Bob@X.org>` -> `Bob@X.org`), for legacy keys."""
    bare = text.strip()
    if bare.endswith(">") and "<" in bare:
        bare = bare[bare.rfind("<") + 1 : -1].strip()
    return bare
