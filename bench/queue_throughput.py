"""Queue mode (RELAY_DELIVERY=queue) against the direct client-to-sink ceiling, on the same box.

Prints figures; it is not a test. Four kinds of process, all on 127.0.0.1:
- the sink: the SES stand-in (STARTTLS + AUTH + PIPELINING) in its own process
  (`bench/_queue_load.py`);
- the load generator: a hand-written SMTP client on plain asyncio streams, in its own process;
- the relay: `python -m relay.main` in queue mode (its spool in a temporary directory on the same
  disk, real fsyncs), delivering to the same sink;
- this process, which only orchestrates (and fills spools directly through `LocalSpool`).

Phases:
1. accept rate at 1 and 20 connections: ceiling = load generator -> sink (STARTTLS + AUTH),
   relay = load generator -> relay (250 = on disk); the relay delivers to the sink meanwhile
   (durability and delivery included). Ratio goals: >= 0.50 at 1 connection, >= 0.45 at 20.
   Every Message-ID answered 250 must reach the sink exactly once (checked after the drain).
   For diagnosis, the same load against a relay whose upstream is unreachable (nothing
   delivered meanwhile): the accept path's own rate.
2. fsyncs per accepted message at 20 connections: relay_spool_commits_total /
   relay_spool_accepted_total over the run, from /metrics (every spool commit counts, the
   delivery bookkeeping's too); with strace installed, cross-checked in a short separate run
   under `strace -f -c -e trace=fsync,fdatasync` (goal: below 1).
3. drain of a backlog: N messages put straight into a spool (relay stopped), then the relay
   started at SES_RATE_LIMIT: achieved rate (goal >= 99% of the limit) and the largest count in
   any 1-s window at the sink (goal <= rate + burst); 10,000 at 50/s and 100,000 at 500/s. The
   second also gives the time from the relay's start to the first delivery (goal < 5 s).
4. relay PSS with 20,000 and 200,000 messages queued (a trickle of 1/s delivering): goal
   < 80 MiB, and < 10 MiB more with 200,000 than with 20,000.

Usage:  PYTHONPATH=libs:services:. python bench/queue_throughput.py [--quick] [--messages N]
        [--drain-small N] [--drain-large N] [--memory-small N] [--memory-large N] [--no-strace]
Do not run the full benchmark on a busy machine: the drain phases alone take ~7 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import functools
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from bench._queue_load import PASSWORD, USER, LoadProcess, SinkProcess, payload
from ses_core.queue import NewMessage, QueuedEnvelope
from ses_core.queue.local import LocalSpool
from ses_core.testing.certs import TestCertificates
from tests.support.relay_harness import RelayProcess, relay_command

MIB = 2**20


def relay_environ(sink: SinkProcess, ca_file: str, spool_dir: Path, **extra: str) -> dict[str, str]:
    """A queueing relay pointed at the sink, its spool in `spool_dir`, logs at WARNING."""
    return {
        "AWS_SMTP_HOST": "127.0.0.1",
        "AWS_SMTP_PORT": str(sink.port),
        "AWS_SMTP_USERNAME": USER,
        "AWS_SMTP_PASSWORD": PASSWORD,
        "RELAY_UPSTREAM_CA_FILE": ca_file,
        "RELAY_DELIVERY": "queue",
        "RELAY_SPOOL_DIR": str(spool_dir),
        "RELAY_SPOOL_MIN_FREE": "0",
        "SES_RATE_LIMIT": "100000",
        "RELAY_RATE_BURST": "1000",
        "RELAY_GRACE_PERIOD": "2",
        "RELAY_LOG_LEVEL": "WARNING",
        **extra,
    }


def metrics(relay: RelayProcess) -> dict[str, float]:
    """The relay's /metrics samples without labels (name -> value)."""
    url = f"http://127.0.0.1:{relay.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                samples[name] = float(value)
    return samples


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll `condition()` every 0.1 s; RuntimeError after `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:.0f} s waiting for {what}"
            raise RuntimeError(message)
        time.sleep(0.1)


def exactly_once(acked: list[str], ids: list[str]) -> str:
    """Every acknowledged Message-ID arrived once: a verdict line."""
    counts = collections.Counter(ids)
    missing = sum(1 for mid in acked if counts[mid] == 0)
    duplicated = sum(1 for mid in acked if counts[mid] > 1)
    verdict = "OK" if missing == duplicated == 0 else "FAILED"
    return f"{verdict}: {len(acked)} answered 250, missing {missing}, duplicated {duplicated}"


def max_window(arrivals: list[float], width: float = 1.0) -> int:
    """The largest number of arrivals in any window [t, t + width)."""
    best = 0
    for i, start in enumerate(arrivals):
        best = max(best, bisect.bisect_left(arrivals, start + width, i) - i)
    return best


async def _fill(directory: Path, count: int, tag: str) -> float:
    spool = LocalSpool.open(directory, min_free_bytes=0)
    started = time.perf_counter()
    try:
        for first in range(0, count, 1000):
            batch = []
            for number in range(first, min(count, first + 1000)):
                _, data = payload(tag, number)
                envelope = QueuedEnvelope(
                    "bench@example.com", [f"r{number}@example.org"], time.time(), size=len(data)
                )
                batch.append(spool.put(NewMessage(envelope, data)))
            await asyncio.gather(*batch)
    finally:
        await spool.aclose()
    return time.perf_counter() - started


def fill_spool(directory: Path, count: int, tag: str) -> None:
    """Put `count` messages into a fresh spool in `directory` (no relay running)."""
    seconds = asyncio.run(_fill(directory, count, tag))
    print(f"  (filled {count} messages in {seconds:.1f} s: {count / seconds:.0f}/s)", flush=True)


def throughput(
    args: argparse.Namespace,
    sink: SinkProcess,
    load: LoadProcess,
    certs: TestCertificates,
    work: Path,
) -> None:
    ca = certs.ca_file
    relay = RelayProcess(relay_environ(sink, ca, work / "spool-accept"), ops_endpoint=True)
    relay.start()
    try:
        for port, direct in ((relay.port, False), (sink.port, True)):  # warm-up, not counted
            load.run(port=port, direct=direct, ca_file=ca, messages=200, connections=4, tag="w")
        wait_until(lambda: sink.count() >= 200, 60, "the warm-up's delivery")
        for connections in (1, 20):
            phase = functools.partial(
                load.run, ca_file=ca, messages=args.messages, connections=connections
            )
            sink.reset()
            ceiling = phase(port=sink.port, direct=True, tag=f"d{connections}")
            sink.reset()
            before = metrics(relay)
            relayed = phase(port=relay.port, direct=False, tag=f"r{connections}")
            after = metrics(relay)
            ratio = relayed["rate"] / ceiling["rate"]
            goal = 0.50 if connections == 1 else 0.45
            print(
                f"[accept] {connections:>2} conn: ceiling {ceiling['rate']:7.0f} msg/s, "
                f"relay (queue) {relayed['rate']:7.0f} msg/s, ratio {ratio:.2f} "
                f"(goal >= {goal:.2f}: {'met' if ratio >= goal else 'NOT met'}); replies: "
                f"ceiling {ceiling['codes']}, relay {relayed['codes']}",
                flush=True,
            )
            accepted = after["relay_spool_accepted_total"] - before["relay_spool_accepted_total"]
            during = after["relay_spool_commits_total"] - before["relay_spool_commits_total"]
            acked = relayed["acked"]
            wait_until(lambda: sink.count() >= len(acked), 300, "the relay's drain")  # noqa: B023
            total = (
                metrics(relay)["relay_spool_commits_total"] - before["relay_spool_commits_total"]
            )
            if connections == 20:
                per = during / max(accepted, 1)
                print(
                    f"[fsync] 20 conn: {during:.0f} spool commits during the accept run for "
                    f"{accepted:.0f} accepted = {per:.2f} per message (goal < 1: "
                    f"{'met' if per < 1 else 'NOT met'}); {total / max(accepted, 1):.2f} per "
                    "message once delivered (delivery bookkeeping included)",
                    flush=True,
                )
            verdict = exactly_once(acked, sink.arrivals()[0])
            print(f"[exactly-once] {connections} conn: {verdict}", flush=True)
    finally:
        relay.stop()


def accept_only(
    args: argparse.Namespace,
    load: LoadProcess,
    sink: SinkProcess,
    certs: TestCertificates,
    work: Path,
) -> None:
    """For diagnosis, not a goal: the accept rate with nothing delivered meanwhile (the upstream
    port is closed, so the workers' attempts fail at once and wait out their backoff)."""
    closed = relay_environ(sink, certs.ca_file, work / "spool-accept-only", AWS_SMTP_PORT="1")
    relay = RelayProcess(closed)
    relay.start()
    try:
        options = {"port": relay.port, "direct": False, "ca_file": certs.ca_file}
        load.run(**options, messages=200, connections=4, tag="wa")
        for connections in (1, 20):
            result = load.run(
                **options, messages=args.messages, connections=connections, tag=f"a{connections}"
            )
            print(
                f"[accept-only] {connections:>2} conn: relay {result['rate']:7.0f} msg/s with no "
                "delivery running (upstream unreachable): the accept path alone",
                flush=True,
            )
    finally:
        relay.stop()


def strace_fsyncs(
    args: argparse.Namespace,
    sink: SinkProcess,
    load: LoadProcess,
    certs: TestCertificates,
    work: Path,
) -> None:
    strace = shutil.which("strace")
    if strace is None or args.no_strace:
        print("[fsync/strace] skipped (strace not installed or --no-strace)")
        return
    summary = work / "strace-summary.txt"
    command = [
        strace,
        "-f",
        "-c",
        "-e",
        "trace=fsync,fdatasync",
        "-o",
        str(summary),
        *relay_command(),
    ]
    relay = RelayProcess(
        relay_environ(sink, certs.ca_file, work / "spool-strace"),
        ops_endpoint=True,
        command=command,
    )
    relay.start(timeout=60)
    count = max(200, args.messages // 5)
    try:
        sink.reset()
        result = load.run(
            port=relay.port,
            direct=False,
            ca_file=certs.ca_file,
            messages=count,
            connections=20,
            tag="s",
        )
        wait_until(lambda: sink.count() >= len(result["acked"]), 300, "the strace run's drain")
        accepted = metrics(relay)["relay_spool_accepted_total"]
    finally:
        # SIGTERM the relay itself (strace's child), so that strace writes its summary on exit.
        for child in psutil.Process(relay.pid).children():
            with contextlib.suppress(psutil.Error):
                child.send_signal(signal.SIGTERM)
        relay.wait(30)
        relay.stop()
    calls = 0
    for line in summary.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync") and len(parts) >= 5:
            calls += int(parts[3])
    print(
        f"[fsync/strace] 20 conn, {accepted:.0f} accepted (delivered meanwhile): {calls} "
        f"fsync+fdatasync calls in all = {calls / max(accepted, 1):.2f} per message",
        flush=True,
    )


def drain(
    count: int,
    rate: int,
    sink: SinkProcess,
    certs: TestCertificates,
    work: Path,
    *,
    first_goal: bool,
) -> None:
    print(f"[drain] filling {count} messages for a drain at {rate}/s", flush=True)
    spool_dir = work / f"spool-drain-{count}"
    fill_spool(spool_dir, count, f"q{count}")
    sink.reset()
    burst = 1
    relay = RelayProcess(
        relay_environ(
            sink, certs.ca_file, spool_dir, SES_RATE_LIMIT=str(rate), RELAY_RATE_BURST=str(burst)
        )
    )
    started = time.monotonic()
    relay.start(timeout=60)
    try:
        wait_until(lambda: sink.count() >= count, count / rate * 1.5 + 60, f"{count} deliveries")
        first = sink.first_arrival()
        ids, times = sink.arrivals()
    finally:
        relay.stop()
    achieved = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    window = max_window(times)
    unique = len(set(ids))
    print(
        f"[drain] {count} queued at {rate}/s (burst {burst}): achieved {achieved:.2f}/s "
        f"({achieved / rate:.1%}, goal >= 99%), max in any 1 s window {window} "
        f"(goal <= {rate + burst}: {'met' if window <= rate + burst else 'NOT met'}), "
        f"delivered {len(ids)}, distinct {unique}",
        flush=True,
    )
    if first_goal and first is not None:
        delay = first - started
        print(
            f"[start] {count} queued: first delivery {delay:.2f} s after the relay was started "
            f"(goal < 5 s: {'met' if delay < 5 else 'NOT met'})",
            flush=True,
        )


def memory(small: int, large: int, sink: SinkProcess, certs: TestCertificates, work: Path) -> None:
    pss = {}
    for count in (small, large):
        print(f"[memory] filling {count} messages", flush=True)
        spool_dir = work / f"spool-memory-{count}"
        fill_spool(spool_dir, count, f"m{count}")
        relay = RelayProcess(relay_environ(sink, certs.ca_file, spool_dir, SES_RATE_LIMIT="1"))
        relay.start(timeout=60)
        try:
            time.sleep(5)  # start-up, first leases, first stats
            samples = []
            for _ in range(6):
                samples.append(relay.pss())
                time.sleep(0.5)
            pss[count] = max(samples)
        finally:
            relay.stop()
        shutil.rmtree(spool_dir, ignore_errors=True)
    growth = pss[large] - pss[small]
    small_ok = "met" if pss[large] < 80 * MIB else "NOT met"
    growth_ok = "met" if growth < 10 * MIB else "NOT met"
    print(
        f"[memory] relay PSS with {small} queued {pss[small] / MIB:.1f} MiB, with {large} queued "
        f"{pss[large] / MIB:.1f} MiB (goal < 80 MiB: {small_ok}; difference "
        f"{growth / MIB:.1f} MiB, goal < 10 MiB: {growth_ok})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, help="per accept-rate run")
    parser.add_argument("--drain-small", type=int, default=10_000, help="backlog drained at 50/s")
    parser.add_argument("--drain-large", type=int, default=100_000, help="backlog drained at 500/s")
    parser.add_argument("--memory-small", type=int, default=20_000)
    parser.add_argument("--memory-large", type=int, default=200_000)
    parser.add_argument("--no-strace", action="store_true", help="skip the strace cross-check")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run (~1 min)")
    args = parser.parse_args()
    if args.quick:
        args.messages, args.drain_small, args.drain_large = 500, 150, 1_000
        args.memory_small, args.memory_large = 1_000, 5_000
    work = Path(tempfile.mkdtemp(prefix="queue-bench-", dir=os.environ.get("QUEUE_BENCH_DIR")))
    certs = TestCertificates.create(str(work))
    print(
        f"queue-mode benchmark: {args.messages} messages of ~{len(payload('x', 0)[1])} B per "
        f"accept run, cpus={os.cpu_count()}, python {sys.version.split()[0]}, spool under {work}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    try:
        with SinkProcess(certs) as sink, LoadProcess() as load:
            throughput(args, sink, load, certs, work)
            accept_only(args, load, sink, certs, work)
            strace_fsyncs(args, sink, load, certs, work)
            drain(args.drain_small, 50, sink, certs, work, first_goal=False)
            drain(args.drain_large, 500, sink, certs, work, first_goal=True)
            memory(args.memory_small, args.memory_large, sink, certs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
