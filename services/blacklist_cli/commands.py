"""The CLI's commands: each takes the parsed arguments and a `Context`, returns an `ExitCode`.

Commands talk to the blacklist through `BlacklistAdmin`, whichever store the options name (a
SQLite file or the DynamoDB table), and to AWS only through `Context.clients`, so tests run them
against real SQLite files, moto and stubbed clients.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import attrs

from blacklist_cli.clients import AwsClients
from blacklist_cli.output import entry_to_json, write_json_lines, write_table
from blacklist_cli.suppression_sync import (
    SES_CALLS_PER_SECOND,
    Pacer,
    Progress,
    SyncReport,
    export_to_ses,
    import_from_ses,
)
from ses_core.addresses import normalize_address
from ses_core.blacklist import (
    Blacklist,
    BlacklistAdmin,
    BlacklistEntry,
    BlacklistReason,
    InMemoryBlacklist,
)
from ses_core.errors import InvalidAddress

LIST_PAGE_SIZE = 500


class ExitCode(enum.IntEnum):
    """The documented exit codes (see `blacklist_cli.main`)."""

    OK = 0
    NEGATIVE = 1
    USAGE = 2
    CREDENTIALS = 3
    UNAVAILABLE = 4
    INTERRUPTED = 130


class UsageError(Exception):
    """A problem with what the operator asked for; printed as one line, exit code 2."""


@attrs.frozen
class Context:
    """What every command gets besides its arguments.

    Attributes:
        clients: where AWS clients come from.
        stdout: results. stderr: errors, warnings and progress bars.
        resources: closes what commands open (the SQLite connection) when `main` returns.
        sleep: how to wait between paced SES calls.
    """

    clients: AwsClients
    stdout: TextIO
    stderr: TextIO
    resources: contextlib.ExitStack
    sleep: Callable[[float], None] = time.sleep


# -- stores ---------------------------------------------------------------------------------


def open_blacklist(args: argparse.Namespace, context: Context, *, create: bool) -> Blacklist:
    """The store the options name; `create` allows a new SQLite file (add, import)."""
    if args.sqlite is not None:
        from ses_core.blacklist.sqlite import SqliteBlacklist

        path: Path = args.sqlite
        if not create and not path.exists():
            raise UsageError(f"no SQLite blacklist at {path} (add or import-ses creates one)")
        sqlite = SqliteBlacklist(path)
        context.resources.callback(sqlite.close)
        return sqlite
    from ses_core.blacklist.dynamodb import DynamoDBBlacklist

    return DynamoDBBlacklist(args.table, client=context.clients.client("dynamodb", args.region))


def _keys(addresses: Sequence[str]) -> list[str]:
    """Normalise every address before any store access; the first bad one is a usage error."""
    keys: list[str] = []
    for text in addresses:
        try:
            keys.append(normalize_address(text))
        except InvalidAddress as exc:
            raise UsageError(f"invalid address {text!r}: {exc}") from None
    return keys


# -- commands ---------------------------------------------------------------------------------


def run_check(args: argparse.Namespace, context: Context) -> ExitCode:
    """Print each address's status; exit 1 if any is blacklisted."""
    keys = _keys(args.addresses)
    found = open_blacklist(args, context, create=False).lookup_many(keys)
    out = context.stdout
    for key in dict.fromkeys(keys):
        entry = found.get(key)
        if args.format == "json":
            import json

            document = {
                "address": key,
                "blacklisted": entry is not None,
                "entry": None if entry is None else entry_to_json(entry),
            }
            out.write(json.dumps(document, ensure_ascii=False, sort_keys=True) + "\n")
        elif entry is None:
            out.write(f"{key}: not blacklisted\n")
        else:
            detail = f", {entry.detail}" if entry.detail else ""
            out.write(
                f"{key}: BLACKLISTED ({entry.reason}{detail}; {entry.count} event(s), "
                f"last seen {entry.last_seen:%Y-%m-%d %H:%M:%S} UTC)\n"
            )
    return ExitCode.NEGATIVE if found else ExitCode.OK


def run_add(args: argparse.Namespace, context: Context) -> ExitCode:
    """Blacklist each address, keeping existing entries unless --replace."""
    keys = list(dict.fromkeys(_keys(args.addresses)))
    blacklist = open_blacklist(args, context, create=True)
    existing = {} if args.replace else blacklist.lookup_many(keys)
    now = datetime.now(UTC)
    for key in keys:
        if key in existing:
            entry = existing[key]
            context.stdout.write(f"{key}: already blacklisted ({entry.reason}); kept\n")
            continue
        blacklist.put(
            BlacklistEntry.manual(
                key, detail=args.detail, reason=BlacklistReason(args.reason), now=now
            )
        )
        context.stdout.write(f"{key}: added ({args.reason})\n")
    return ExitCode.OK


def run_remove(args: argparse.Namespace, context: Context) -> ExitCode:
    """Remove each address; exit 1 if some were not blacklisted."""
    keys = list(dict.fromkeys(_keys(args.addresses)))
    blacklist = open_blacklist(args, context, create=False)
    missing = 0
    for key in keys:
        if blacklist.remove(key):
            context.stdout.write(f"{key}: removed\n")
        else:
            missing += 1
            context.stdout.write(f"{key}: was not blacklisted\n")
    return ExitCode.NEGATIVE if missing else ExitCode.OK


def run_list(args: argparse.Namespace, context: Context) -> ExitCode:
    """Print the entries that pass the filters, page by page."""
    domain = _domain_key(args.domain) if args.domain else None
    reasons = {BlacklistReason(reason) for reason in args.reason} if args.reason else None
    blacklist = open_blacklist(args, context, create=False)

    def matching() -> Iterator[BlacklistEntry]:
        cursor: str | None = None
        printed = 0
        while True:
            page = blacklist.list_page(limit=LIST_PAGE_SIZE, cursor=cursor)
            for entry in page.entries:
                if reasons is not None and entry.reason not in reasons:
                    continue
                if args.since is not None and entry.last_seen < args.since:
                    continue
                if domain is not None and not _in_domain(entry.address, domain):
                    continue
                yield entry
                printed += 1
                if args.limit is not None and printed >= args.limit:
                    return
            cursor = page.next_cursor
            if cursor is None:
                return

    if args.format == "json":
        write_json_lines(matching(), context.stdout)
    else:
        write_table(list(matching()), context.stdout)
    return ExitCode.OK


def _domain_key(domain: str) -> str:
    try:
        return normalize_address(f"postmaster@{domain.strip().lstrip('@')}").rpartition("@")[2]
    except InvalidAddress as exc:
        raise UsageError(f"invalid domain {domain!r}: {exc}") from None


def _in_domain(address: str, domain: str) -> bool:
    host = address.rpartition("@")[2]
    return host == domain or host.endswith("." + domain)


def _progress_bar(context: Context, description: str, total: int | None) -> Progress:
    from tqdm import tqdm

    # Only on a terminal: progress bars in log files and pipes are noise.
    enabled = context.stderr.isatty()
    bar: Progress = tqdm(
        total=total, desc=description, unit="addr", file=context.stderr, disable=not enabled
    )
    return bar


def _report(report: SyncReport, context: Context, *, source: str, destination: str) -> None:
    verb = "would write" if report.dry_run else "wrote"
    context.stdout.write(
        f"{source} -> {destination}: {report.seen} read, {verb} {report.written}, "
        f"{report.already_present} already present, {len(report.invalid)} invalid, "
        f"{len(report.refused)} refused\n"
    )
    for address, message in report.refused:
        context.stderr.write(f"refused by SES: {address}: {message}\n")


def _planned(context: Context, dry_run: bool) -> Callable[[str, str], None] | None:
    if not dry_run:
        return None

    def planned(address: str, reason: str) -> None:
        context.stdout.write(f"would write {address} ({reason})\n")

    return planned


def run_import_ses(args: argparse.Namespace, context: Context) -> ExitCode:
    """Copy the SES suppression list into the blacklist."""
    blacklist: BlacklistAdmin
    if args.dry_run and args.sqlite is not None and not args.sqlite.exists():
        # Nothing to compare against yet, and a dry run must not create the file.
        blacklist = InMemoryBlacklist()
    else:
        blacklist = open_blacklist(args, context, create=True)
    ses = context.clients.client("sesv2", args.ses_region or args.region)
    bar = _progress_bar(context, "import-ses", None)
    try:
        report = import_from_ses(
            blacklist,
            ses,
            reasons=args.reason,
            dry_run=args.dry_run,
            progress=bar,
            on_write=_planned(context, args.dry_run),
            pacer=Pacer(SES_CALLS_PER_SECOND, sleep=context.sleep),
        )
    finally:
        _close(bar)
    _report(report, context, source="SES suppression list", destination="blacklist")
    return ExitCode.OK


def run_export_ses(args: argparse.Namespace, context: Context) -> ExitCode:
    """Copy blacklisted addresses into the SES suppression list; exit 1 if SES refused some."""
    if args.rate <= 0:
        raise UsageError(f"--rate must be positive, got {args.rate}")
    blacklist = open_blacklist(args, context, create=False)
    ses = context.clients.client("sesv2", args.ses_region or args.region)
    reasons = {BlacklistReason(reason) for reason in args.reason} if args.reason else None
    bars: list[Progress] = []

    def progress_factory(total: int) -> Progress:
        bars.append(_progress_bar(context, "export-ses", total))
        return bars[-1]

    try:
        report = export_to_ses(
            blacklist,
            ses,
            reasons=reasons,
            dry_run=args.dry_run,
            pacer=Pacer(args.rate, sleep=context.sleep),
            progress_factory=progress_factory,
            on_write=_planned(context, args.dry_run),
        )
    finally:
        for bar in bars:
            _close(bar)
    _report(report, context, source="blacklist", destination="SES suppression list")
    return ExitCode.NEGATIVE if report.refused else ExitCode.OK


def run_migrate_keys(args: argparse.Namespace, context: Context) -> ExitCode:
    """Normalise the legacy keys of a DynamoDB table."""
    from blacklist_cli.legacy_keys import migrate_legacy_keys

    if args.sqlite is not None:
        raise UsageError("migrate-keys applies to DynamoDB tables; SQLite keys are always normal")
    client = context.clients.client("dynamodb", args.region)

    def changed(raw: str, what: str) -> None:
        prefix = "would " if args.dry_run else ""
        context.stdout.write(f"{raw}: {prefix}{what}\n")

    report = migrate_legacy_keys(client, args.table, dry_run=args.dry_run, on_change=changed)
    verb = "would rewrite" if report.dry_run else "rewrote"
    context.stdout.write(
        f"{args.table}: {report.scanned} items scanned, {verb} {report.rewritten}, "
        f"{report.merged} merged into existing entries, {len(report.invalid)} invalid keys\n"
    )
    return ExitCode.OK


def run_replay_failed(args: argparse.Namespace, context: Context) -> ExitCode:
    """Replay the Lambda's failed invocations into the blacklist; exit 1 if some were kept."""
    from blacklist_cli.replay import MessageOutcome, Status, queue_region, replay_failed
    from blacklist_lambda.config import parse_thresholds, policy_with_thresholds

    try:
        thresholds = parse_thresholds(args.soft_bounce_thresholds)
    except ValueError as exc:
        message = f"--soft-bounce-thresholds {str(exc).partition(': ')[2]}"
        raise UsageError(message) from None
    if not 0 <= args.wait_seconds <= 20:
        raise UsageError(f"--wait-seconds must be 0 to 20 (SQS's limit), got {args.wait_seconds}")
    if not args.verbose:
        # The processor logs failures with tracebacks for CloudWatch; here each is one line.
        processor_log = logging.getLogger("blacklist_lambda")
        context.resources.callback(processor_log.setLevel, processor_log.level)
        processor_log.setLevel(logging.CRITICAL)
    store = open_blacklist(args, context, create=False)
    queue = context.clients.client("sqs", queue_region(args.queue_url) or args.region)

    def show(outcome: MessageOutcome) -> None:
        stream = context.stderr if outcome.kept else context.stdout
        stream.write(f"{outcome.message_id}: {outcome.status}: {outcome.detail}\n")

    report = replay_failed(
        queue,
        args.queue_url,
        store,
        policy=policy_with_thresholds(thresholds),
        store_name=str(args.table or args.sqlite),
        max_messages=args.max,
        wait_seconds=args.wait_seconds,
        dry_run=args.dry_run,
        on_outcome=show,
    )
    unreadable, failed = report.count(Status.UNREADABLE), report.count(Status.FAILED)
    others = {
        "not attempted": report.count(Status.NOT_ATTEMPTED),
        "not deleted": report.count(Status.NOT_DELETED),
    }
    total_kept = unreadable + failed + sum(others.values())
    kept = f"{total_kept} kept ({unreadable} unreadable, {failed} failed"
    kept += "".join(f", {n} {what}" for what, n in others.items() if n) + ")"
    if args.dry_run:
        context.stdout.write(
            f"replay-failed (dry run): {len(report.outcomes)} received, "
            f"{report.count(Status.REPLAYABLE)} replayable, {kept}; nothing written or deleted\n"
        )
    else:
        context.stdout.write(
            f"replay-failed: {len(report.outcomes)} received, "
            f"{report.count(Status.REPLAYED)} replayed and deleted, {kept}\n"
        )
    if report.store_error is not None:
        raise report.store_error  # exit 4, "blacklist unavailable: ..."
    return ExitCode.NEGATIVE if total_kept else ExitCode.OK


def _close(bar: Any) -> None:
    close = getattr(bar, "close", None)
    if close is not None:
        close()
