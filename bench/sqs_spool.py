"""Benchmark: the shared spool (SQS + S3) beside the local and in-memory spools, and what it costs.

Prints figures; it is not a test, and moto is not AWS (its latency is a local HTTP server's, not
SQS's or S3's), so the rates only compare the backends' own overhead on one box. The call counts
per message are exact, and they are what AWS bills: the script ends with the monthly cost per
million messages computed from them.

Phases, per backend (memory, local = SQLite on a temporary directory with real fsyncs, sqs =
moto's server in a process of its own on 127.0.0.1):
1. accept: N messages of ~2 KB (one recipient) put by C concurrent tasks; messages/s;
2. drain: C workers lease (batches of up to 10), read the body and settle each message as
   delivered (no SMTP: the spool's own cost); messages/s.
For sqs, every boto3 call is counted by a botocore `before-call` hook, per phase.

    PYTHONPATH=libs:services:. python -m bench.sqs_spool [--messages N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from bench._queue_load import payload
from ses_core.queue import MemorySpool, RecipientState, Spool
from ses_core.queue.local import LocalSpool
from ses_core.queue.sqs import SqsSpool, SqsSpoolSettings
from ses_core.testing.moto_sqs import aws_client, create_spool_resources, new_message
from ses_core.testing.ports import free_port, wait_until_accepting

#: Longest a phase may run (seconds); the counts are then of what was done.
PHASE_LIMIT = 300.0
#: USD, us-east-1 list prices (standard queue requests beyond the free tier; S3 Standard).
SQS_PER_MILLION = 0.40
S3_PUT_PER_THOUSAND = 0.005  # PUT, COPY, POST, LIST (PutObjectTagging is a PUT)
S3_GET_PER_THOUSAND = 0.0004  # GET, HEAD and all other requests (GetObjectTagging too)
S3_FREE = frozenset({"DeleteObject", "DeleteObjectTagging"})  # DELETE requests are free
S3_PUT_CLASS = frozenset({"PutObject", "PutObjectTagging", "ListObjectsV2", "CopyObject"})


@attrs.frozen
class PhaseResult:
    """One phase of one backend: how many messages, how long, which calls."""

    messages: int
    seconds: float
    calls: Counter[str]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


class CallCounter:
    """Counts boto3 calls ("sqs:SendMessage") of the clients it is attached to."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def attach(self, client: Any) -> Any:
        service = client.meta.service_model.service_name
        client.meta.events.register(
            "before-call.*.*", lambda model, **_: self.calls.update([f"{service}:{model.name}"])
        )
        return client

    def take(self) -> Counter[str]:
        taken, self.calls = self.calls, Counter()
        return taken


@contextlib.contextmanager
def moto_process() -> Iterator[str]:
    """moto's server in a child process on 127.0.0.1 (so it does not share our GIL)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_accepting(port, timeout=30, alive=lambda: process.poll() is None)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def accept(spool: Spool, messages: int, concurrency: int) -> tuple[int, float]:
    """Put `messages` ~2 KB messages with `concurrency` tasks; (done, seconds)."""
    numbers = iter(range(messages))
    done = 0
    deadline = time.monotonic() + PHASE_LIMIT

    async def worker() -> None:
        nonlocal done
        for number in numbers:
            if time.monotonic() > deadline:
                return
            _, data = payload("sqs", number)
            await spool.put(new_message(f"r{number}@example.org", data=data))
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


async def drain(spool: Spool, messages: int, concurrency: int) -> tuple[int, float]:
    """Lease, read and settle (as delivered) until `messages` are done; (done, seconds)."""
    done = 0
    deadline = time.monotonic() + PHASE_LIMIT

    async def worker() -> None:
        nonlocal done
        while done < messages and time.monotonic() < deadline:
            for message in await spool.lease(10, time.time() + 1):
                await spool.body(message)
                delivered = message.envelope.with_recipients(
                    attrs.evolve(r, state=RecipientState.ACCEPTED)
                    for r in message.envelope.recipients
                )
                await spool.settle(message, delivered, next_attempt_at=None)
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - started


async def run_backend(name: str, args: argparse.Namespace) -> dict[str, PhaseResult]:
    counter = CallCounter()
    with contextlib.ExitStack() as stack:
        spool: Any
        if name == "memory":
            spool = MemorySpool()
        elif name == "local":
            directory = stack.enter_context(tempfile.TemporaryDirectory(dir=args.tmp))
            spool = LocalSpool.open(Path(directory), min_free_bytes=0)
        else:
            endpoint = stack.enter_context(moto_process())
            resources = create_spool_resources(endpoint)
            settings = SqsSpoolSettings(
                queue_url=resources.queue_url,
                bucket=resources.bucket,
                wait_time=1,
                threads=args.concurrency,
            )
            spool = SqsSpool(
                counter.attach(aws_client("sqs", endpoint)),
                counter.attach(aws_client("s3", endpoint)),
                settings,
            )
        try:
            done, seconds = await accept(spool, args.messages, args.concurrency)
            accepted = PhaseResult(done, seconds, counter.take())
            done, seconds = await drain(spool, done, args.concurrency)
            drained = PhaseResult(done, seconds, counter.take())
        finally:
            await spool.aclose()
    return {"accept": accepted, "drain": drained}


def per_message(result: PhaseResult) -> dict[str, float]:
    return {call: count / max(1, result.messages) for call, count in sorted(result.calls.items())}


def cost_per_million(calls: dict[str, float]) -> tuple[float, float, float, float]:
    """(SQS requests, S3 PUT-class, S3 GET-class per message; USD per million messages)."""
    sqs = sum(n for call, n in calls.items() if call.startswith("sqs:"))
    s3 = {call.split(":", 1)[1]: n for call, n in calls.items() if call.startswith("s3:")}
    puts = sum(n for op, n in s3.items() if op in S3_PUT_CLASS)
    gets = sum(n for op, n in s3.items() if op not in S3_PUT_CLASS and op not in S3_FREE)
    usd = (
        sqs * SQS_PER_MILLION
        + puts * S3_PUT_PER_THOUSAND * 1000
        + gets * S3_GET_PER_THOUSAND * 1000
    )
    return sqs, puts, gets, usd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backends", default="memory,local,sqs")
    parser.add_argument("--tmp", default=None, help="where the local spool's directory goes")
    args = parser.parse_args()

    print(f"{args.messages} messages of ~2 KB, {args.concurrency} concurrent tasks")
    print(f"{'backend':8} {'accept msg/s':>13} {'drain msg/s':>12}")
    results = {}
    for name in args.backends.split(","):
        results[name] = asyncio.run(run_backend(name, args))
        phases = results[name]
        print(f"{name:8} {phases['accept'].rate:13.0f} {phases['drain'].rate:12.0f}")

    if "sqs" not in results:
        return
    print("\nsqs: API calls per message")
    total: Counter[str] = Counter()
    for phase, result in results["sqs"].items():
        calls = per_message(result)
        total.update(calls)
        print(f"  {phase}: " + ", ".join(f"{call} {n:.2f}" for call, n in calls.items()))
    sqs, puts, gets, usd = cost_per_million(dict(total))
    print(
        f"  per message: SQS requests {sqs:.2f}, S3 PUT-class {puts:.2f}, S3 GET-class {gets:.2f}"
        " (DELETEs are free)"
    )
    print(
        f"  cost per million messages: {sqs:.2f} x ${SQS_PER_MILLION:.2f} + {puts:.2f} x $5.00"
        f" + {gets:.2f} x $0.40 = ${usd:.2f} (us-east-1 list prices; idle receives extra)"
    )


if __name__ == "__main__":
    main()
