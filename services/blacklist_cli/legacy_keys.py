"""Rewrite the original service's mixed-case DynamoDB keys under normalised keys, once.

The original service stored addresses as written (`Bob@Example.com`) and matched them
case-sensitively. `DynamoDBBlacklist` also asks for the exact text it is given, but a legacy
item whose case differs from what a relay is given is missed. This one-off migration scans the
table and, for every item whose key is not normalised, stores the entry under the normalised key
(unless one exists: the newer, normalised entry wins) and deletes the legacy item.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs

from ses_core.addresses import normalize_address
from ses_core.blacklist.dynamodb import DynamoDBBlacklist, entry_from_item
from ses_core.errors import InvalidAddress

log = logging.getLogger(__name__)


@attrs.define
class MigrationReport:
    """What the migration did (or, with dry_run, would do).

    Attributes:
        scanned: items read.
        rewritten: legacy items stored under their normalised key.
        merged: legacy items dropped because a normalised entry already existed.
        invalid: keys that are not valid addresses (left alone).
        dry_run: whether nothing was written.
    """

    dry_run: bool
    scanned: int = 0
    rewritten: int = 0
    merged: int = 0
    invalid: list[str] = attrs.Factory(list)


def migrate_legacy_keys(
    client: Any,
    table: str,
    *,
    dry_run: bool = False,
    on_change: Callable[[str, str], None] | None = None,
) -> MigrationReport:
    """Normalise every legacy key of `table` (a boto3 DynamoDB client); see the module doc."""
    blacklist = DynamoDBBlacklist(table, client=client)
    report = MigrationReport(dry_run=dry_run)
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", []):
            report.scanned += 1
            raw = item["email"]["S"]
            try:
                key = normalize_address(raw)
            except InvalidAddress:
                log.warning("leaving item with invalid address key %r alone", raw)
                report.invalid.append(raw)
                continue
            if raw == key:
                continue
            # `get(key)` asks for the normalised key only (the text given is already normal).
            if blacklist.get(key) is None:
                report.rewritten += 1
                action = "rewrite"
                if not dry_run:
                    blacklist.put(entry_from_item(item))
            else:
                report.merged += 1
                action = "drop (normalised entry exists)"
            if on_change is not None:
                on_change(raw, f"{action} as {key}")
            if not dry_run:
                client.delete_item(TableName=table, Key={"email": {"S": raw}})
    return report
