"""The SES v2 API upstream beside the SMTP upstream: messages/s, relay CPU per message, memory.

Prints figures; it is not a test. Everything runs on 127.0.0.1, on one box:

- API: a relay process with RELAY_UPSTREAM=api, pointed (AWS_ENDPOINT_URL_SESV2) at the SES v2
  stub (`ses_core.testing.sesv2_stub`, in this process, a thread per keep-alive connection) that
  answers every SendEmail after a fixed 20 ms, as SES does from nearby; and the same at 0 ms, to
  see the relay's own cost without the wait;
- SMTP: a relay process with the SMTP upstream pointed at the scripted SES stand-in (STARTTLS +
  AUTH, answers at once), as `bench/relay_throughput.py` runs it;
- the load generator (aiosmtplib, 20 sessions, one recipient per ~2 KB message) runs in a process
  of its own (`relay_throughput.LoadGenerator`).
For each run: messages/s sustained, the relay process's CPU seconds (user + system) per message,
and its PSS after the run. RELAY_POOL_SIZE is the same for both upstreams (SendEmail calls in
flight, or SMTP sessions). Bounded: a fixed message count, and each phase times out.

Usage:  PYTHONPATH=libs:services:. python bench/api_upstream.py [--messages 4000] [--pool 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.relay_throughput import LoadGenerator, Sink
from ses_core.testing.certs import TestCertificates
from ses_core.testing.sesv2_stub import Answer, SesV2Stub
from tests.support.relay_harness import RelayProcess, upstream_environ

CONNECTIONS = 20
COMMON = {
    "RELAY_MAX_WAIT": "60",
    "RELAY_GRACE_PERIOD": "2",
    "SES_RATE_LIMIT": "1000000",
    "RELAY_RATE_BURST": "1000",
    "RELAY_LOG_LEVEL": "WARNING",
}


@contextlib.contextmanager
def api_relay(stub: SesV2Stub, pool: int) -> Iterator[RelayProcess]:
    environ = {
        **COMMON,
        "RELAY_UPSTREAM": "api",
        "RELAY_SES_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_ENDPOINT_URL_SESV2": stub.url,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "RELAY_POOL_SIZE": str(pool),
    }
    with RelayProcess(environ) as relay:
        yield relay


@contextlib.contextmanager
def smtp_relay(sink: Sink, ca_file: str, pool: int) -> Iterator[RelayProcess]:
    environ = {**COMMON, **upstream_environ(sink.upstream, ca_file), "RELAY_POOL_SIZE": str(pool)}
    with RelayProcess(environ) as relay:
        yield relay


async def measure(
    label: str, relay: RelayProcess, load: LoadGenerator, messages: int, ca_file: str
) -> None:
    process = psutil.Process(relay.pid)
    # Warm up (sessions, pools, imports), then measure.
    await load.run(
        "blast", port=relay.port, direct=False, ca_file=ca_file, messages=200,
        connections=CONNECTIONS, tag=f"warm-{label}",
    )  # fmt: skip
    cpu = process.cpu_times()
    started = time.perf_counter()
    result = await load.run(
        "blast", port=relay.port, direct=False, ca_file=ca_file, messages=messages,
        connections=CONNECTIONS, tag=label,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    after = process.cpu_times()
    used = (after.user - cpu.user) + (after.system - cpu.system)
    codes: dict[int, int] = {}
    for _, code, _ in result["results"]:
        codes[code] = codes.get(code, 0) + 1
    pss = process.memory_full_info().pss / 2**20
    print(
        f"{label:<24} {messages / elapsed:8.0f} msg/s  {1e6 * used / messages:7.0f} us CPU/msg"
        f"  ({100 * used / elapsed:4.0f}% of a core)  PSS {pss:6.1f} MiB  replies {codes}"
    )


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="api-bench-"))
    certs = TestCertificates.create(str(workdir))
    sink = Sink(certs)
    await sink.upstream.start()
    load = LoadGenerator(in_process=False)
    print(
        f"API vs SMTP upstream: {args.messages} messages, {CONNECTIONS} client connections, "
        f"RELAY_POOL_SIZE={args.pool}, cpus={os.cpu_count()}, python {sys.version.split()[0]}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    try:
        for delay in (0.020, 0.0):
            with SesV2Stub(default=Answer(delay=delay)) as stub, api_relay(stub, args.pool) as r:
                await measure(f"api, SES after {delay * 1000:.0f} ms", r, load, args.messages, "")
                sent = len(stub.requests)
            print(f"{'':<24} stub received {sent} SendEmail calls")
        with smtp_relay(sink, certs.ca_file, args.pool) as relay:
            await measure("smtp, stand-in at once", relay, load, args.messages, "")
    finally:
        load.close()
        await sink.upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--pool", type=int, default=CONNECTIONS)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
