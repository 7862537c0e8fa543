"""The relay's lookup stores: the blacklist (SQLite or DynamoDB, cached and batched) and the
DynamoDB API-key table, with their readiness probes.

Split from `relay.wiring`, which assembles these with the other components.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from relay.auth import DynamoDBApiKeys
from relay.config import BOTH_BLACKLIST_STORES, ConfigError, RelayConfig
from relay.wiring_upstream import Probe, with_region
from ses_core.blacklist import BatchingLookup, CachedBlacklist

# Logged as `relay.wiring`, as before the split: log filters and tests keep working.
log = logging.getLogger("relay.wiring")


def build_blacklist(
    config: RelayConfig, stack: contextlib.AsyncExitStack, probes: dict[str, Probe]
) -> CachedBlacklist | None:
    """SQLite when RELAY_BLACKLIST_SQLITE (or local mode), DynamoDB with USE_BLACKLIST (lookups
    batched); cached.
    Never both (`relay.config` refuses that too); the store in use is logged at start."""
    inner: Any
    batcher: BatchingLookup | None = None
    dynamodb = config.use_blacklist and bool(config.dynamodb_table)
    if config.blacklist_sqlite is not None and dynamodb:
        raise ConfigError(BOTH_BLACKLIST_STORES)
    if config.blacklist_sqlite is not None:
        from ses_core.blacklist.sqlite import SqliteBlacklist

        inner = SqliteBlacklist(config.blacklist_sqlite)
        stack.callback(inner.close)
        log.info("blacklist: SQLite file %s", config.blacklist_sqlite)
    elif config.use_blacklist and config.dynamodb_table:
        from ses_core.blacklist.dynamodb import DynamoDBBlacklist

        try:
            inner = DynamoDBBlacklist.from_table_name(config.dynamodb_table)
        except ValueError:
            message = "AWS_DEFAULT_REGION: no AWS region configured (needed for DYNAMODB_TABLE)"
            raise ConfigError(message) from None
        probes["dynamodb"] = _dynamodb_probe(inner, stack)
        # RCPT lookups of all sessions share BatchGetItem calls (ses_core.blacklist.batching).
        batcher = BatchingLookup(inner.lookup_many, store_keys=inner.store_keys)
        stack.push_async_callback(batcher.aclose)
        log.info("blacklist: DynamoDB table %s", config.dynamodb_table)
    else:
        log.info("blacklist: off (set USE_BLACKLIST and DYNAMODB_TABLE to refuse bounced mail)")
        return None
    return CachedBlacklist(
        inner,
        positive_ttl=config.blacklist_cache_blacklisted_ttl,
        negative_ttl=config.blacklist_cache_ttl,
        max_entries=config.blacklist_cache_max_entries,
        batcher=batcher,
    )


def _dynamodb_probe(table: Any, stack: contextlib.AsyncExitStack) -> Probe:
    """A lookup on a thread of its own: queued behind RCPT lookups it would time out whenever
    DynamoDB is merely slow, and /readyz would then take every replica out of service."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="dynamodb-probe")
    stack.callback(executor.shutdown, wait=False, cancel_futures=True)
    # example.com, not .invalid: the address parser refuses special-use domains.
    address = ["readiness-probe@example.com"]

    async def dynamodb_ready() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, table.lookup_many, address)

    return dynamodb_ready


def api_key_table(config: RelayConfig, probes: dict[str, Probe]) -> DynamoDBApiKeys | None:
    """The DynamoDB API-key table with USE_APIKEY (short timeouts: a slow table makes AUTH a
    454, not a hang) and its readiness probe (a GetItem, no DescribeTable); else None."""
    table = config.api_keys_table
    if not (config.use_apikey and table):
        return None
    keys = with_region(lambda: DynamoDBApiKeys.from_table_name(table), "DYNAMODB_API_KEYS_TABLE")

    async def api_keys_ready() -> None:
        await asyncio.to_thread(keys.probe)

    probes["api_keys"] = api_keys_ready
    return keys
