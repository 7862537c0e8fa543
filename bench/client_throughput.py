"""SES SMTP client throughput against a local STARTTLS+AUTH sink, as a ratio to plain aiosmtplib.

A counting `SmtpUpstream` sink (STARTTLS, AUTH PLAIN, trustme certificate) runs in its own process
on 127.0.0.1. In the same run the script measures:
- baseline: one plain `aiosmtplib.SMTP` session (STARTTLS + login once), `sendmail` in a loop;
- `SesSmtpClient` with a pool of 1, 4 and 8 sessions, `--senders` concurrent tasks calling
  `send` (default settings otherwise: sessions recycled every 100 messages, no rate limiter);
and prints messages per second and the ratio to the baseline. `--loop both` repeats everything
with uvloop on both sides. Every run is bounded by `--messages` and `--max-seconds`.

    PYTHONPATH=libs:services:. python -m bench.client_throughput
    PYTHONPATH=libs:services:. python -m bench.client_throughput --messages 3000 --loop both
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import ssl
import statistics
import tempfile
import time

import aiosmtplib
import attrs

from ses_core.smtp import OutboundMessage, SmtpSettings
from ses_core.smtp.client import SesSmtpClient
from ses_core.testing.certs import TestCertificates
from ses_core.testing.upstream import SmtpUpstream

USER, PASSWORD = "AKIABENCH", "bench-smtp-password"
SENDER, RECIPIENT = "bench@example.com", "sink@example.com"


def message_body(size: int) -> bytes:
    """A plain message of about `size` octets."""
    header = b"Message-ID: <bench@example.com>\r\nSubject: throughput\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return header + line * max(1, (size - len(header)) // len(line))


def _serve_sink(certificates: TestCertificates, use_uvloop: bool, pipe: object) -> None:
    """Child process: run a counting sink until the parent closes the pipe."""
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    connection: multiprocessing.connection.Connection = pipe  # type: ignore[assignment]

    async def serve() -> None:
        sink = SmtpUpstream(
            certificates.server_context(), credentials=(USER, PASSWORD), record=False
        )
        async with sink:
            connection.send(sink.port)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, connection.recv)  # returns when the parent says so

    if use_uvloop:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


@attrs.frozen
class Run:
    """One measured run.

    Attributes:
        label: what ran.
        messages: messages accepted.
        seconds: wall time.
    """

    label: str
    messages: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0


async def run_baseline(port: int, ca_file: str, count: int, body: bytes, limit: float) -> Run:
    """Plain aiosmtplib over one reused STARTTLS session."""
    context = ssl.create_default_context(cafile=ca_file)
    smtp = aiosmtplib.SMTP(
        hostname="localhost",
        port=port,
        start_tls=True,
        tls_context=context,
        username=USER,
        password=PASSWORD,
        local_hostname="bench.local",
    )
    await smtp.connect()
    sent = 0
    start = time.perf_counter()
    try:
        for _ in range(count):
            await smtp.sendmail(SENDER, [RECIPIENT], body)
            sent += 1
            if time.perf_counter() - start > limit:
                break
        elapsed = time.perf_counter() - start
    finally:
        await smtp.quit()
    return Run("aiosmtplib, 1 reused session", sent, elapsed)


async def run_client(
    port: int,
    ca_file: str,
    pool: int,
    senders: int,
    count: int,
    body: bytes,
    limit: float,
    max_messages: int = 100,
) -> Run:
    """SesSmtpClient with `pool` sessions and `senders` concurrent callers."""
    settings = SmtpSettings(
        "127.0.0.1",
        port=port,
        username=USER,
        password=PASSWORD,
        ca_file=ca_file,
        server_hostname="localhost",
        local_hostname="bench.local",
        pool_size=pool,
        max_messages_per_connection=max_messages,
    )
    message = OutboundMessage(SENDER, (RECIPIENT,), body)
    remaining = count
    accepted = 0
    start = time.perf_counter()

    async with SesSmtpClient(settings) as client:

        async def sender() -> None:
            nonlocal remaining, accepted
            while remaining > 0 and time.perf_counter() - start < limit:
                remaining -= 1
                result = await client.send(message)
                accepted += result.all_accepted

        await asyncio.gather(*(sender() for _ in range(senders)))
        elapsed = time.perf_counter() - start
        stats = client.stats
    label = f"SesSmtpClient pool={pool} ({senders} senders, {stats.opened} sessions)"
    return Run(label, accepted, elapsed)


def measure(
    use_uvloop: bool, certificates: TestCertificates, args: argparse.Namespace
) -> list[Run]:
    """All runs for one event-loop flavour (sink restarted with the same flavour)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    sink = context.Process(target=_serve_sink, args=(certificates, use_uvloop, child), daemon=True)
    sink.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("sink did not start")
        port = parent.recv()
        body = message_body(args.size)

        async def all_runs() -> list[Run]:
            ca_file = certificates.ca_file
            await run_baseline(port, ca_file, 50, body, args.max_seconds)  # warm-up
            runs = []
            for _ in range(args.repeat):
                # Interleaved, so a noisy neighbour hurts every variant alike.
                runs.append(
                    await run_baseline(port, ca_file, args.messages, body, args.max_seconds)
                )
                for pool in args.pools:
                    run = await run_client(
                        port,
                        ca_file,
                        pool,
                        args.senders,
                        args.messages,
                        body,
                        args.max_seconds,
                        args.max_messages_per_connection,
                    )
                    runs.append(run)
            return runs

        if use_uvloop:
            import uvloop

            return uvloop.run(all_runs())
        return asyncio.run(all_runs())
    finally:
        parent.send("stop")
        sink.join(10)
        if sink.is_alive():
            sink.terminate()
            sink.join(5)


def main() -> None:
    """Parse arguments, run, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages per run")
    parser.add_argument("--senders", type=int, default=32, help="concurrent send() callers")
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--size", type=int, default=2048, help="message size in octets")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per run")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "both"], default="asyncio")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median shown)")
    parser.add_argument("--max-messages-per-connection", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    flavours = {"asyncio": [False], "uvloop": [True], "both": [False, True]}[args.loop]
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as folder:
        certificates = TestCertificates.create(folder)
        for use_uvloop in flavours:
            runs = measure(use_uvloop, certificates, args)
            print(
                f"\nloop={'uvloop' if use_uvloop else 'asyncio'} (both sides), "
                f"{args.size} B messages, {args.messages} per run, median of {args.repeat}, "
                f"recycle every {args.max_messages_per_connection} messages, loopback"
            )
            print_table(runs)


def print_table(runs: list[Run]) -> None:
    """Median rate per variant, and its ratio to the aiosmtplib baseline."""
    by_kind: dict[str, list[Run]] = {}
    for run in runs:
        kind = run.label.split(" (")[0]
        by_kind.setdefault(kind, []).append(run)
    medians = {kind: statistics.median(r.rate for r in group) for kind, group in by_kind.items()}
    baseline = next(iter(medians.values()))
    print(f"{'variant':<32} {'msg/s (median)':>14} {'all runs':>22} {'ratio':>6}")
    for kind, group in by_kind.items():
        each = "/".join(f"{r.rate:.0f}" for r in group)
        ratio = medians[kind] / baseline if baseline else 0.0
        print(f"{kind:<32} {medians[kind]:>14.0f} {each:>22} {ratio:>6.2f}")
    print("  " + "; ".join(sorted({r.label for r in runs if "senders" in r.label})))


if __name__ == "__main__":
    main()
