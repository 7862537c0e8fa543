"""Benchmark: blacklist lookups per second, with and without the read-through cache.

The workload imitates a relay: each message has 1-5 recipients; most recipients come from a small
hot set (newsletters, transactional mail to active users), the rest from a large population;
about a tenth of the population is blacklisted. Each message is one `lookup_many` call.

Backends: moto in-process (`mock_aws`, no HTTP: measures our code plus moto), moto's HTTP server
on 127.0.0.1 (real HTTP round trips: closer to a relay talking to DynamoDB, though a real
DynamoDB round trip is slower still), and a SQLite file for comparison.
Each run is bounded by both a message count and a time limit. Prints figures; asserts nothing.
How a relay's RCPT lookups share `BatchGetItem` calls across sessions: `bench/blacklist_rcpt.py`.

    PYTHONPATH=libs:services:. python -m bench.blacklist_lookup --seconds 3
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moto import mock_aws

from ses_core.blacklist import Blacklist, BlacklistEntry, BlacklistReason, CachedBlacklist
from ses_core.blacklist.dynamodb import DynamoDBBlacklist, entry_to_item
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.testing.moto_dynamodb import (
    TEST_REGION,
    MotoServer,
    create_blacklist_table,
    dynamodb_client,
)

TABLE = "bench-blacklist"


def workload(args: argparse.Namespace) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(blacklisted, messages, warm-up messages), reproducible from the seed.

    The warm-up messages share the hot set but draw their cold recipients independently, so a
    warmed cache has seen the hot set, not the measured run's cold recipients.
    """
    rng = random.Random(args.seed)
    population = [f"user{n}@example{n % 50}.com" for n in range(args.population)]
    blacklisted = rng.sample(population, args.population // 10)
    hot = rng.sample(population, args.hot)

    def messages(count: int) -> list[list[str]]:
        return [
            [
                rng.choice(hot) if rng.random() < args.hot_share else rng.choice(population)
                for _ in range(rng.randint(1, 5))
            ]
            for _ in range(count)
        ]

    return blacklisted, messages(args.messages), messages(args.messages)


def load_dynamodb(client: Any, blacklisted: list[str], table: str = TABLE) -> None:
    """Create `table` and write one manual entry per blacklisted address, 25 per batch."""
    create_blacklist_table(client, table)
    now = datetime.now(UTC)
    for start in range(0, len(blacklisted), 25):
        requests = [
            {"PutRequest": {"Item": entry_to_item(BlacklistEntry.manual(a, now=now))}}
            for a in blacklisted[start : start + 25]
        ]
        client.batch_write_item(RequestItems={table: requests})


def run(store: Blacklist, messages: list[list[str]], seconds: float) -> tuple[int, int, float]:
    """(messages done, lookups done, elapsed seconds), stopping at the time limit."""
    lookups = 0
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    for recipients in messages:
        store.lookup_many(recipients)
        lookups += len(recipients)
        done += 1
        if done % 16 == 0 and time.perf_counter() > deadline:
            break
    return done, lookups, time.perf_counter() - start


def report(
    backend: str,
    label: str,
    store: Blacklist,
    messages: list[list[str]],
    seconds: float,
    calls: Callable[[], int] | None,
) -> None:
    before = calls() if calls else 0
    stats = store.stats if isinstance(store, CachedBlacklist) else None
    done, lookups, elapsed = run(store, messages, seconds)
    extra = ""
    if isinstance(store, CachedBlacklist) and stats is not None:
        hits = store.stats.hits - stats.hits
        total = hits + store.stats.misses - stats.misses
        extra += f"  hit ratio {hits / total:6.1%}"
    if calls:
        extra += f"  BatchGetItem {calls() - before:6d} ({(calls() - before) / done:.2f}/msg)"
    print(
        f"{backend:<12} {label:<10} {lookups / elapsed:10.0f} lookups/s "
        f"{done / elapsed:9.0f} msgs/s  ({done} msgs, {lookups} lookups, {elapsed:5.2f} s){extra}"
    )


def counter(client: Any) -> Callable[[], int]:
    count = [0]

    def hook(**_: Any) -> None:
        count[0] += 1

    client.meta.events.register("before-call.dynamodb.BatchGetItem", hook)
    return lambda: count[0]


def cached(inner: Blacklist) -> CachedBlacklist:
    return CachedBlacklist(inner, positive_ttl=300, negative_ttl=30, max_entries=50_000)


def bench_store(
    backend: str,
    store: Blacklist,
    messages: list[list[str]],
    warmup: list[list[str]],
    seconds: float,
    calls: Callable[[], int] | None = None,
) -> None:
    report(backend, "no cache", store, messages, seconds, calls)
    report(backend, "cold cache", cached(store), messages, seconds, calls)
    warm = cached(store)
    run(warm, warmup, seconds)
    report(backend, "warm cache", warm, messages, seconds, calls)


@contextmanager
def dummy_credentials() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time limit per run")
    parser.add_argument("--messages", type=int, default=20_000, help="message limit per run")
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--hot", type=int, default=200, help="size of the hot recipient set")
    parser.add_argument("--hot-share", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--backends", default="mock_aws,server,sqlite", help="comma-separated subset"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    blacklisted, messages, warmup = workload(args)
    backends = set(args.backends.split(","))
    print(
        f"workload: {len(messages)} msgs max, 1-5 recipients, hot set {args.hot} "
        f"({args.hot_share:.0%} of picks), population {args.population}, "
        f"{len(blacklisted)} blacklisted; limit {args.seconds:.1f} s per run"
    )
    with dummy_credentials():
        if "mock_aws" in backends:
            with mock_aws():
                client = dynamodb_client()
                load_dynamodb(client, blacklisted)
                store = DynamoDBBlacklist(TABLE, client=client)
                bench_store("mock_aws", store, messages, warmup, args.seconds, counter(client))
        if "server" in backends:
            with MotoServer() as server:
                client = server.client(TEST_REGION)
                load_dynamodb(client, blacklisted)
                store = DynamoDBBlacklist(TABLE, client=client)
                bench_store("moto-server", store, messages, warmup, args.seconds, counter(client))
    if "sqlite" in backends:
        with tempfile.TemporaryDirectory() as tmp:
            with SqliteBlacklist(Path(tmp) / "bench.db") as sqlite_store:
                now = datetime.now(UTC)
                for address in blacklisted:
                    sqlite_store.put(
                        BlacklistEntry.manual(address, reason=BlacklistReason.IMPORTED, now=now)
                    )
                bench_store("sqlite", sqlite_store, messages, warmup, args.seconds)


if __name__ == "__main__":
    main()
