"""Relay throughput, latency, memory and rate precision, against a direct baseline in the same run.

Prints figures; it is not a test. Everything runs on 127.0.0.1:

- the sink is the scripted SES stand-in (`ses_core.testing.upstream.SmtpUpstream`) with
  STARTTLS + AUTH, in this process;
- the relay runs as a separate process (`python -m relay.main` through the test harness, uvloop,
  logs discarded, SQLite blacklist on) in AWS mode pointed at the sink, so its memory (PSS) is
  its own;
- the load generator (aiosmtplib, one session per connection, EHLO once) runs in a process of
  its own, as an application does (`--in-process-client` runs it in this process instead).

Why a separate load process: in one process with the sink, the direct baseline never crossed a
process boundary (client and sink answered each other within one event loop) while the relay
path crossed two per round trip, so one connection measured mostly the cost of process wake-ups;
and at 20 connections the baseline's client and sink shared one core while the relay had a
second, which flattered the relay. With its own process each side pays real boundaries, as
apps, relays and SES do on separate machines.

Phases (each message is ~2 KB, one recipient, a unique Message-ID):
1. throughput, N messages over 1 and over 20 connections: direct client -> sink (STARTTLS + AUTH
   per connection) versus client -> relay -> sink; rate limit set very high;
2. added latency at 20 messages/s over one connection (p50/p99, relay minus direct);
3. relay PSS (psutil) sampled during and after the throughput runs;
4. rate precision: a fresh relay (idle limiter) with SES_RATE_LIMIT=50 and the default burst,
   20 connections sending as fast as they can; arrival times measured at the sink: the largest
   count in any sliding 1-second window, and the achieved rate;
5. exactly once: every message answered 250 must reach the sink exactly once (by Message-ID).

Usage:  PYTHONPATH=libs:services:. python bench/relay_throughput.py [--messages 10000] [--quick]
(`RELAY_BENCH_PROFILE=/path/script.py` runs that script instead of `-m relay.main`, e.g. a
cProfile wrapper, to see where the relay's time goes.)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import aiosmtplib
import psutil

from bench._queue_load import payload
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import DEFAULT_CREDENTIALS, SmtpUpstream
from tests.support.relay_harness import RelayProcess, upstream_environ

USER, PASSWORD = DEFAULT_CREDENTIALS
PHASE_TIMEOUT = 600.0


class Sink:
    """The SES stand-in; each accepted message carries its arrival time."""

    def __init__(self, certs: TestCertificates, *, pipelining: bool = True) -> None:
        self.upstream = SmtpUpstream(certs.server_context(), pipelining=pipelining)

    @property
    def arrivals(self) -> list[float]:
        return [m.received_at for m in self.upstream.messages]

    def reset(self) -> None:
        self.upstream.messages.clear()

    def ids(self) -> collections.Counter[str]:
        return collections.Counter(m.message_id or "" for m in self.upstream.messages)


@contextlib.contextmanager
def relay_process(
    sink: SmtpUpstream, ca_file: str, workdir: Path, **env: str
) -> Iterator[tuple[int, psutil.Process]]:
    """Start a relay process pointed at the sink (logs discarded); yield (SMTP port, psutil
    handle). `RELAY_BENCH_PROFILE` names a script to run instead of `-m relay.main`."""
    environ = {
        **upstream_environ(sink, ca_file),
        "RELAY_BLACKLIST_SQLITE": str(workdir / "blacklist.sqlite3"),
        "RELAY_MAX_WAIT": "60",
        "RELAY_GRACE_PERIOD": "2",
        "SES_RATE_LIMIT": "1000000",
        "RELAY_RATE_BURST": "1000",
        **env,
    }
    profile = os.environ.get("RELAY_BENCH_PROFILE")
    command = [sys.executable, profile] if profile else None
    with RelayProcess(environ, command=command) as relay:
        yield relay.port, psutil.Process(relay.pid)


@contextlib.asynccontextmanager
async def session(port: int, *, direct: bool, ca_file: str) -> AsyncIterator[aiosmtplib.SMTP]:
    """One client session: to the sink with STARTTLS + AUTH, or to the relay in clear."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        start_tls=direct,
        cert_bundle=ca_file if direct else None,
        timeout=60,
    )
    await client.connect()
    if direct:
        await client.login(USER, PASSWORD)
    try:
        yield client
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()


async def send(client: aiosmtplib.SMTP, number: int, tag: str) -> tuple[str, int, float]:
    """Send one message; return (Message-ID, DATA code, seconds)."""
    message_id, data = payload(tag, number)
    started = time.perf_counter()
    try:
        await client.mail("bench@example.com")
        await client.rcpt(f"r{number}@example.org")
        code = (await client.data(data)).code
    except aiosmtplib.SMTPResponseException as exc:
        code = exc.code
        await client.rset()
    return message_id, code, time.perf_counter() - started


async def blast(
    port: int, *, direct: bool, ca_file: str, messages: int, connections: int, tag: str
) -> dict[str, Any]:
    """Send `messages` over `connections` sessions as fast as possible."""
    results: list[tuple[str, int, float]] = []
    counter = iter(range(messages))

    async def worker() -> None:
        async with session(port, direct=direct, ca_file=ca_file) as client:
            for number in counter:
                results.append(await send(client, number, tag))

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(connections))), PHASE_TIMEOUT)
    elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "rate": messages / elapsed, "results": results}


async def paced(
    port: int, *, direct: bool, ca_file: str, rate: float, count: int, tag: str
) -> list[float]:
    """Send `count` messages at `rate`/s over one session; return per-message latencies."""
    latencies = []
    async with session(port, direct=direct, ca_file=ca_file) as client:
        start = time.perf_counter()
        for number in range(count):
            delay = start + number / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            _, code, seconds = await send(client, number, tag)
            if code == 250:
                latencies.append(seconds)
    return latencies


#: The load phases a `LoadGenerator` runs, by name (the name crosses the process boundary).
_PHASES: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {"blast": blast, "paced": paced}


def _client_main(kind: str, options: dict[str, Any]) -> Any:
    """Run one load phase (`blast` or `paced`) in this (load generator) process's own loop."""
    phase = _PHASES[kind]
    try:
        import uvloop
    except ImportError:
        return asyncio.run(phase(**options))
    return uvloop.run(phase(**options))


class LoadGenerator:
    """Runs load phases in one spawned process (or in this one, with `in_process`)."""

    def __init__(self, *, in_process: bool) -> None:
        self._pool = (
            None
            if in_process
            else concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        )

    async def run(self, kind: str, **options: Any) -> Any:
        """The phase's result (as `blast` or `paced` return it)."""
        if self._pool is None:
            return await _PHASES[kind](**options)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _client_main, kind, options)

    def close(self) -> None:
        """Stop the load process."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def check_exactly_once(results: list[tuple[str, int, float]], sink: Sink) -> str:
    """Every 250'd Message-ID reached the sink exactly once."""
    counts = sink.ids()
    accepted = [mid for mid, code, _ in results if code == 250]
    missing = sum(1 for mid in accepted if counts[mid] == 0)
    duplicated = sum(1 for mid in accepted if counts[mid] > 1)
    other = collections.Counter(code for _, code, _ in results if code != 250)
    verdict = "OK" if missing == duplicated == 0 else "FAILED"
    return (
        f"{verdict}: {len(accepted)} answered 250, missing {missing}, "
        f"duplicated {duplicated}, non-250 {dict(other)}"
    )


def max_window(arrivals: list[float], width: float = 1.0) -> int:
    """The largest number of arrivals in any window [t, t + width)."""
    best = 0
    for i, start in enumerate(arrivals):
        best = max(best, bisect.bisect_left(arrivals, start + width, i) - i)
    return best


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    certs = TestCertificates.create(str(workdir))
    sink = Sink(certs, pipelining=not args.no_pipelining)
    await sink.upstream.start()
    ca = certs.ca_file
    print(
        f"relay throughput benchmark: {args.messages} messages of ~{len(payload('x', 0)[1])} B, "
        f"cpus={os.cpu_count()}, python {sys.version.split()[0]}, "
        f"sink PIPELINING {'off' if args.no_pipelining else 'on'}, "
        f"load generator {'in this process' if args.in_process_client else 'in its own process'}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    load = LoadGenerator(in_process=args.in_process_client)
    try:
        pss: list[int] = []
        extra = {"RELAY_BLACKLIST_SQLITE": ""} if args.no_blacklist else {}
        with relay_process(sink.upstream, ca, workdir, RELAY_POOL_SIZE=str(args.pool), **extra) as (
            port,
            proc,
        ):
            # warm-up (imports, pool sessions, caches), not counted
            await load.run(
                "blast",
                port=port,
                direct=False,
                ca_file=ca,
                messages=200,
                connections=4,
                tag="warm",
            )
            await load.run(
                "blast",
                port=sink.upstream.port,
                direct=True,
                ca_file=ca,
                messages=200,
                connections=4,
                tag="warmd",
            )
            for connections in (1, 20):
                sink.reset()
                direct = await load.run(
                    "blast",
                    port=sink.upstream.port,
                    direct=True,
                    ca_file=ca,
                    messages=args.messages,
                    connections=connections,
                    tag=f"d{connections}",
                )
                direct_check = check_exactly_once(direct["results"], sink)
                sink.reset()
                cpu_before = proc.cpu_times()
                sampler = asyncio.create_task(sample_pss(proc, pss))
                relayed = await load.run(
                    "blast",
                    port=port,
                    direct=False,
                    ca_file=ca,
                    messages=args.messages,
                    connections=connections,
                    tag=f"r{connections}",
                )
                sampler.cancel()
                cpu_after = proc.cpu_times()
                user_us = (cpu_after.user - cpu_before.user) / args.messages * 1e6
                system_us = (cpu_after.system - cpu_before.system) / args.messages * 1e6
                relay_check = check_exactly_once(relayed["results"], sink)
                ratio = relayed["rate"] / direct["rate"]
                goal = 0.50 if connections == 1 else 0.45
                print(
                    f"[throughput] {connections:>2} conn: direct {direct['rate']:8.0f} msg/s, "
                    f"relay {relayed['rate']:8.0f} msg/s, ratio {ratio:.2f} (goal >= {goal:.2f}: "
                    f"{'met' if ratio >= goal else 'NOT met'})"
                )
                print(
                    f"[cpu] relay process per message: {user_us:.0f} us user + "
                    f"{system_us:.0f} us system"
                )
                print(f"[exactly-once] direct {direct_check}")
                print(f"[exactly-once] relay  {relay_check}")
            pss.append(proc.memory_full_info().pss)
            print(
                f"[memory] relay PSS max {max(pss) / 2**20:.1f} MiB, "
                f"after runs {pss[-1] / 2**20:.1f} MiB "
                f"(goal <= 60 MiB: {'met' if max(pss) <= 60 * 2**20 else 'NOT met'})"
            )

            count = int(args.latency_seconds * 20)
            direct_lat = await load.run(
                "paced",
                port=sink.upstream.port,
                direct=True,
                ca_file=ca,
                rate=20,
                count=count,
                tag="ld",
            )
            relay_lat = await load.run(
                "paced", port=port, direct=False, ca_file=ca, rate=20, count=count, tag="lr"
            )
            added = pct(relay_lat, 0.99) - pct(direct_lat, 0.99)
            added_p50 = statistics.median(relay_lat) - statistics.median(direct_lat)
            print(
                f"[latency] 20 msg/s x {count}: direct p50 {pct(direct_lat, .5) * 1e3:.2f} ms "
                f"p99 {pct(direct_lat, .99) * 1e3:.2f} ms; "
                f"relay p50 {pct(relay_lat, .5) * 1e3:.2f} ms "
                f"p99 {pct(relay_lat, .99) * 1e3:.2f} ms; added p99 {added * 1e3:.2f} ms "
                f"(goal <= 8 ms: {'met' if added <= 0.008 else 'NOT met'}); "
                f"added p50 {added_p50 * 1e3:.2f} ms"
            )

        with relay_process(
            sink.upstream,
            ca,
            workdir,
            SES_RATE_LIMIT="50",
            RELAY_RATE_BURST="1",
            RELAY_POOL_SIZE=str(args.pool),
        ) as (port, _):
            sink.reset()
            total = int(args.rate_seconds * 50)
            result = await load.run(
                "blast",
                port=port,
                direct=False,
                ca_file=ca,
                messages=total,
                connections=20,
                tag="rate",
            )
            arrivals = sorted(sink.arrivals)
            span = arrivals[-1] - arrivals[0]
            achieved = (len(arrivals) - 1) / span if span > 0 else float("inf")
            windows = max_window(arrivals)
            over = sum(
                1
                for i, t in enumerate(arrivals)
                if bisect.bisect_left(arrivals, t + 1.0, i) - i > 51
            )
            print(
                f"[rate] limit 50/s burst 1, {total} msgs from idle over 20 conn: "
                f"achieved {achieved:.2f}/s "
                f"({achieved / 50:.1%} of limit, goal >= 99%), max in any 1 s window {windows} "
                f"(goal <= 51), windows above 51: {over}"
            )
            print(f"[exactly-once] rate   {check_exactly_once(result['results'], sink)}")
    finally:
        load.close()
        await sink.upstream.stop()


async def sample_pss(proc: psutil.Process, out: list[int]) -> None:
    """Sample the relay's PSS every 0.5 s (psutil reads smaps; keep it infrequent)."""
    while True:
        with contextlib.suppress(psutil.Error):
            out.append(proc.memory_full_info().pss)
        await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=4, help="RELAY_POOL_SIZE")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--rate-seconds", type=float, default=10.0)
    parser.add_argument("--no-blacklist", action="store_true", help="run the relay without one")
    parser.add_argument(
        "--no-pipelining", action="store_true", help="the sink does not offer PIPELINING"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 messages, short phases")
    parser.add_argument(
        "--in-process-client",
        action="store_true",
        help="run the load generator in the benchmark's own process, with the sink",
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.latency_seconds, args.rate_seconds = 1000, 5.0, 4.0
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
