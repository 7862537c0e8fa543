"""Benchmark: RCPT latency and BatchGetItem calls per recipient, through a relay, batched or not.

The relay (in this process, on an event loop of its own thread, components built by
`relay.wiring` from USE_BLACKLIST + DYNAMODB_TABLE) looks recipients up in a DynamoDB table
served by moto's HTTP server, which runs in a child process on 127.0.0.1 (so its work does not
share the relay's interpreter lock). Clients (aiosmtplib, in this process's main loop) open 1
or 20 sessions and send `RCPT TO` with a new address each time (every lookup misses the cache:
the case batching is for), 10 % of them blacklisted; the round trip of each RCPT is timed.

Modes: `batched` is the relay as wired (the cache's misses go through a `BatchingLookup`);
`unbatched` swaps in the cache alone, so each miss is its own `BatchGetItem` on a lookup thread,
as before batching. BatchGetItem calls are counted at the relay's boto3 client. Each run is
bounded by a time limit and a count of RCPTs per session. Prints figures; asserts nothing.

    PYTHONPATH=libs:services:. python bench/blacklist_rcpt.py --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.blacklist_lookup import load_dynamodb
from relay.config import RelayConfig
from relay.wiring import Components
from ses_core.blacklist import CachedBlacklist
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.testing.moto_dynamodb import (
    TEST_REGION,
    MotoServer,
    dynamodb_client,
)
from tests.support.relay_harness import ThreadedRelay

TABLE = "bench-rcpt-blacklist"
RCPTS_PER_TRANSACTION = 50  # RSET after this many, keeping envelopes small


def _serve_moto(conn: Connection) -> None:
    """Child process: moto's server until the parent says stop (or goes away)."""
    with MotoServer() as server:
        conn.send(server.endpoint_url)
        try:
            conn.recv()
        except EOFError:
            pass


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's server in a child process; yields its endpoint URL."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve_moto, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(60):
            raise TimeoutError("moto server did not start within 60 s")
        yield parent.recv()
    finally:
        parent.send("stop")
        process.join(10)
        if process.is_alive():
            process.terminate()


@contextmanager
def environment(endpoint_url: str) -> Iterator[None]:
    """boto3's default chain pointed at moto, with dummy credentials; restored afterwards."""
    values = {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint_url,
        "AWS_DEFAULT_REGION": TEST_REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Counter:
    """Counts the BatchGetItem calls (and their keys) of the relay's boto3 client."""

    def __init__(self) -> None:
        self.calls = 0
        self.keys = 0

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        request = json.loads(params["body"])["RequestItems"]
        self.keys += sum(len(r["Keys"]) for r in request.values())


def relay_config(outbox: Path) -> RelayConfig:
    return RelayConfig(
        listen_host="127.0.0.1",
        listen_port=0,
        server_fqdn="relay.bench",
        metrics_port=None,
        local_outbox=outbox,
        use_blacklist=True,
        dynamodb_table=TABLE,
        max_recipients=RCPTS_PER_TRANSACTION,
    )


def adjust(mode: str, counter: Counter) -> Any:
    """The hook that counts calls and, for `unbatched`, drops the batcher from the cache."""

    def hook(components: Components) -> None:
        cache = components.blacklist
        assert isinstance(cache, CachedBlacklist) and isinstance(cache.inner, DynamoDBBlacklist)
        cache.inner.client.meta.events.register("before-call.dynamodb.BatchGetItem", counter)
        if mode == "unbatched":
            components.blacklist = CachedBlacklist(
                cache.inner,
                positive_ttl=cache.positive_ttl,
                negative_ttl=cache.negative_ttl,
                max_entries=cache.max_entries,
            )

    return hook


async def session(
    port: int, number: int, deadline: float, limit: int, blacklisted: set[int]
) -> tuple[list[float], int]:
    """One client sending RCPTs of new addresses until `deadline` or `limit`: (latencies in
    seconds, how many were refused as blacklisted)."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
    await client.connect()
    await client.ehlo()
    latencies: list[float] = []
    refused = 0
    for n in range(limit):
        if n % RCPTS_PER_TRANSACTION == 0:
            if n:
                await client.rset()
            await client.mail("app@example.com")
        index = number * limit + n
        address = (
            f"new{index}@example.org" if index not in blacklisted else f"bl{index}@example.org"
        )
        started = time.perf_counter()
        reply = await client.execute_command(b"RCPT", f"TO:<{address}>".encode())
        latencies.append(time.perf_counter() - started)
        refused += reply.code == 550
        if time.perf_counter() > deadline:
            break
    client.close()
    return latencies, refused


async def clients(port: int, connections: int, args: argparse.Namespace) -> tuple[Any, float]:
    deadline = time.perf_counter() + args.seconds
    blacklisted = set(range(0, connections * args.limit, 10))
    started = time.perf_counter()
    results = await asyncio.gather(
        *(session(port, c, deadline, args.limit, blacklisted) for c in range(connections))
    )
    return results, time.perf_counter() - started


def run(mode: str, connections: int, args: argparse.Namespace) -> None:
    counter = Counter()
    with tempfile.TemporaryDirectory() as outbox:
        relay = ThreadedRelay(relay_config(Path(outbox)), adjust=adjust(mode, counter))
        with relay:
            results, elapsed = asyncio.run(clients(relay.port, connections, args))
    latencies = sorted(t for times, _ in results for t in times)
    refused = sum(r for _, r in results)
    count = len(latencies)
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[min(count - 1, int(count * 0.99))] * 1000
    print(
        f"{mode:<9} {connections:3d} conn  {count:6d} RCPT {count / elapsed:7.0f}/s  "
        f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  BatchGetItem {counter.calls:6d} "
        f"({counter.calls / count:.3f}/RCPT, {counter.keys / max(counter.calls, 1):5.1f} keys "
        f"per call)  550s {refused}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="time limit per run")
    parser.add_argument("--limit", type=int, default=5000, help="RCPTs per session, at most")
    parser.add_argument("--connections", default="1,20", help="comma-separated session counts")
    parser.add_argument("--modes", default="batched,unbatched", help="comma-separated subset")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    connections = [int(c) for c in args.connections.split(",")]
    blacklisted = [f"bl{i}@example.org" for i in range(0, max(connections) * args.limit, 10)]
    print(
        f"every RCPT a new address (10 % blacklisted), moto server in a child process; "
        f"limit {args.seconds:.1f} s or {args.limit} RCPTs per session per run"
    )
    with moto_process() as endpoint_url, environment(endpoint_url):
        load_dynamodb(dynamodb_client(endpoint_url=endpoint_url), blacklisted, TABLE)
        for count in connections:
            for mode in args.modes.split(","):
                run(mode, count, args)


if __name__ == "__main__":
    main()
