"""Blacklist lookups of concurrent sessions share DynamoDB calls: a relay wired from its
environment (USE_BLACKLIST, DYNAMODB_TABLE) against moto's server on a loopback port, with every
`BatchGetItem` counted at the boto3 client (botocore's `before-call` event)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.wiring import Components, build_components
from ses_core.blacklist import BatchingLookup, BlacklistEntry, BlacklistReason, CachedBlacklist
from ses_core.blacklist.dynamodb import DynamoDBBlacklist, entry_to_item
from ses_core.errors import BlacklistUnavailable
from ses_core.testing.moto_dynamodb import TEST_REGION, MotoServer, create_blacklist_table
from tests.integration.relay_support import base_config, relay_client
from tests.support.relay_harness import InProcessRelay

SESSIONS = 20
RECIPIENTS_PER_SESSION = 5


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """moto's DynamoDB on a loopback port."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def dynamodb_environ(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point boto3's default chain at the moto server, with dummy credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto.endpoint_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


async def wired_relay(tmp_path: Path, table: str) -> tuple[Components, list[int]]:
    """Components built by the relay's wiring for `table`, and the key count of every
    BatchGetItem its blacklist store sends."""
    config = base_config(local_outbox=tmp_path, use_blacklist=True, dynamodb_table=table)
    components = await build_components(config)
    cache = components.blacklist
    assert isinstance(cache, CachedBlacklist) and isinstance(cache.inner, DynamoDBBlacklist)
    batches: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        request = json.loads(params["body"])["RequestItems"]
        batches.append(sum(len(r["Keys"]) for r in request.values()))

    cache.inner.client.meta.events.register("before-call.dynamodb.BatchGetItem", count)
    return components, batches


async def session(relay: Any, number: int, start: asyncio.Barrier) -> list[int]:
    """One client: MAIL, then (with all other sessions at once) RCPT of new addresses; the reply
    codes of the RCPTs."""
    client = await relay_client(relay)
    await client.ehlo()
    await client.mail("app@example.com")
    await start.wait()
    codes = []
    for n in range(RECIPIENTS_PER_SESSION):
        reply = await client.execute_command(b"RCPT", f"TO:<s{number}-r{n}@example.org>".encode())
        codes.append(reply.code)
    client.close()
    return codes


async def test_concurrent_sessions_share_batch_get_item_calls(
    tmp_path: Path, moto: MotoServer, dynamodb_environ: None
) -> None:
    """20 sessions RCPT-ing new addresses at once cost at most one BatchGetItem per two
    recipients (before batching: one per recipient), none above 100 keys, answers unchanged."""
    create_blacklist_table(moto.client(), "bl-batching")
    blocked = {f"s{s}-r2@example.org" for s in range(0, SESSIONS, 4)}
    for address in blocked:
        item = entry_to_item(BlacklistEntry.manual(address, reason=BlacklistReason.BOUNCE))
        moto.client().put_item(TableName="bl-batching", Item=item)
    components, batches = await wired_relay(tmp_path, "bl-batching")
    start = asyncio.Barrier(SESSIONS)
    async with InProcessRelay(base_config(), components) as relay:
        results = await asyncio.wait_for(
            asyncio.gather(*(session(relay, s, start) for s in range(SESSIONS))), 30
        )
    recipients = SESSIONS * RECIPIENTS_PER_SESSION
    for number, codes in enumerate(results):
        expected = [
            550 if f"s{number}-r{n}@example.org" in blocked else 250
            for n in range(RECIPIENTS_PER_SESSION)
        ]
        assert codes == expected
    assert sum(batches) == recipients  # every new address asked exactly once
    assert max(batches) <= 100
    assert len(batches) * 2 <= recipients, f"{len(batches)} BatchGetItem for {recipients} RCPTs"
    # The relay closed its components on the way out, the batcher among them.
    cache = components.blacklist
    assert isinstance(cache, CachedBlacklist) and isinstance(cache.batcher, BatchingLookup)
    with pytest.raises(BlacklistUnavailable):
        await cache.batcher.lookup_async(["late@example.org"])


async def test_failed_batch_answers_451_to_every_waiting_session(
    tmp_path: Path, moto: MotoServer, dynamodb_environ: None
) -> None:
    """A table that cannot answer fails every session's lookup in the batch with 451 4.3.0."""
    components, batches = await wired_relay(tmp_path, "bl-missing-table")
    start = asyncio.Barrier(SESSIONS)
    async with InProcessRelay(base_config(), components) as relay:
        results = await asyncio.wait_for(
            asyncio.gather(*(session(relay, s, start) for s in range(SESSIONS))), 30
        )
    assert all(codes == [451] * RECIPIENTS_PER_SESSION for codes in results)
    assert 0 < len(batches) < SESSIONS * RECIPIENTS_PER_SESSION
