"""blacklist-cli: inspect and fix the ses-relay blacklist, and sync it with SES suppression.

Usage (store options go after the command):
    blacklist-cli check  (--table NAME [--region R] | --sqlite PATH) ADDRESS...
    blacklist-cli add    STORE ADDRESS... [--detail TEXT] [--reason manual|imported] [--replace]
    blacklist-cli remove STORE ADDRESS...
    blacklist-cli list   STORE [--reason R]... [--domain D] [--since DATE] [--limit N]
                               [--format table|json]
    blacklist-cli import-ses STORE [--ses-region R] [--reason BOUNCE|COMPLAINT]... [--dry-run]
    blacklist-cli export-ses STORE [--ses-region R] [--reason R]... [--rate N] [--dry-run]
    blacklist-cli migrate-keys --table NAME [--region R] [--dry-run]
        (once, on a table of the original service: rewrites mixed-case keys as normalised keys)

Exit codes:
    0  success; `check`: no given address is blacklisted
    1  `check`: at least one address is blacklisted; `remove`: at least one address was not
       blacklisted; `export-ses`: SES refused at least one address
    2  usage error: bad arguments, an invalid address, no AWS region, missing SQLite file,
       migrate-keys on a SQLite file
    3  AWS credentials missing, or rejected by AWS (including access denied)
    4  the blacklist store or SES failed (unreachable, throttled, table missing, ...)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import attrs

from blacklist_cli.clients import AwsClients, Boto3Clients
from blacklist_cli.output import entry_to_json, write_json_lines, write_table
from blacklist_cli.suppression_sync import (
    SES_CALLS_PER_SECOND,
    SES_REASONS,
    Pacer,
    Progress,
    SyncReport,
    export_to_ses,
    import_from_ses,
)
from ses_core.addresses import normalize_address
from ses_core.blacklist.model import Blacklist, BlacklistEntry, BlacklistReason, InMemoryBlacklist
from ses_core.errors import BlacklistUnavailable, InvalidAddress

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "AccessDeniedException",
        "AccessDenied",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)


class ExitCode(enum.IntEnum):
    """The documented exit codes (see the module docstring)."""

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


def main(
    argv: Sequence[str] | None = None,
    *,
    clients: AwsClients | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run one command; return its exit code (never raises for expected failures)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own message; keep its code (2, or 0 for -h)
        return int(exc.code or 0)
    logging.basicConfig(
        stream=err,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with contextlib.ExitStack() as resources:
            context = Context(
                clients=clients or Boto3Clients(),
                stdout=out,
                stderr=err,
                resources=resources,
                sleep=sleep,
            )
            return int(args.run(args, context))
    except KeyboardInterrupt:
        err.write("interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - converted to a one-line message and an exit code
        code, message = describe_error(exc)
        err.write(f"error: {message}\n")
        if code is ExitCode.UNAVAILABLE:
            log.debug("details", exc_info=True)
        return code


def describe_error(exc: BaseException) -> tuple[ExitCode, str]:
    """Map an exception to (exit code, one-line message); re-raise what is not ours to map."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, UsageError | InvalidAddress):
        return ExitCode.USAGE, str(exc)
    for cause in _causes(exc):
        if isinstance(cause, NoCredentialsError | PartialCredentialsError):
            return ExitCode.CREDENTIALS, (
                f"no usable AWS credentials ({cause}); set AWS_PROFILE, or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use --sqlite"
            )
        if isinstance(cause, NoRegionError):
            return ExitCode.USAGE, "no AWS region: pass --region or set AWS_REGION"
        if isinstance(cause, ClientError):
            error = cause.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _CREDENTIAL_CODES:
                return ExitCode.CREDENTIALS, (
                    f"AWS rejected the credentials or the request ({code}: {error.get('Message')})"
                )
    if isinstance(exc, BlacklistUnavailable):
        return ExitCode.UNAVAILABLE, f"blacklist unavailable: {exc}"
    if isinstance(exc, ClientError | BotoCoreError):
        return ExitCode.UNAVAILABLE, f"AWS call failed: {exc}"
    raise exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets `run`."""
    store = argparse.ArgumentParser(add_help=False)
    where = store.add_argument_group("blacklist store (exactly one)")
    choice = where.add_mutually_exclusive_group(required=True)
    choice.add_argument("--table", metavar="NAME", help="DynamoDB table (hash key `email`)")
    choice.add_argument("--sqlite", metavar="PATH", type=Path, help="SQLite blacklist file")
    where.add_argument("--region", help="AWS region of the table (default: boto3's)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log debug details")

    parser = argparse.ArgumentParser(
        prog="blacklist-cli",
        description="Inspect and fix the ses-relay blacklist; sync it with SES suppression.",
        epilog="Exit codes: 0 ok, 1 negative answer (see --help of check/remove/export-ses), "
        "2 usage, 3 credentials, 4 store or SES unavailable.",
    )
    parser.set_defaults(verbose=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parents = [store, common]

    check = commands.add_parser(
        "check",
        parents=parents,
        help="is an address blacklisted?",
        description="Exit 0 if no address is blacklisted, 1 if at least one is.",
    )
    check.add_argument("addresses", nargs="+", metavar="ADDRESS")
    check.add_argument("--format", choices=("table", "json"), default="table")
    check.set_defaults(run=run_check)

    add = commands.add_parser("add", parents=parents, help="blacklist addresses by hand")
    add.add_argument("addresses", nargs="+", metavar="ADDRESS")
    add.add_argument("--detail", help="free text stored with the entry (why)")
    add.add_argument(
        "--reason",
        choices=(str(BlacklistReason.MANUAL), str(BlacklistReason.IMPORTED)),
        default=str(BlacklistReason.MANUAL),
    )
    add.add_argument(
        "--replace", action="store_true", help="overwrite an existing entry (loses its history)"
    )
    add.set_defaults(run=run_add)

    remove = commands.add_parser(
        "remove",
        parents=parents,
        help="un-blacklist addresses",
        description="Exit 0 if every address was removed, 1 if some were not blacklisted.",
    )
    remove.add_argument("addresses", nargs="+", metavar="ADDRESS")
    remove.set_defaults(run=run_remove)

    listing = commands.add_parser("list", parents=parents, help="list entries")
    listing.add_argument(
        "--reason",
        action="append",
        choices=[str(reason) for reason in BlacklistReason],
        help="only entries with this reason (repeatable)",
    )
    listing.add_argument("--domain", help="only addresses at this domain or its subdomains")
    listing.add_argument(
        "--since", type=_parse_since, help="only entries last seen at or after (ISO-8601, UTC)"
    )
    listing.add_argument("--limit", type=_positive_int, help="print at most N entries")
    listing.add_argument(
        "--format",
        choices=("table", "json"),
        default="table",
        help="table, or json: one JSON object per line (streams; best for large lists)",
    )
    listing.set_defaults(run=run_list)

    sync_common = argparse.ArgumentParser(add_help=False)
    sync_common.add_argument("--ses-region", help="region of the SES account (default: --region)")
    sync_common.add_argument(
        "--dry-run", action="store_true", help="show what would be written; write nothing"
    )

    import_ses = commands.add_parser(
        "import-ses",
        parents=[*parents, sync_common],
        help="copy the SES account suppression list into the blacklist",
        description="Existing blacklist entries are kept; new ones get reason `imported`.",
    )
    import_ses.add_argument(
        "--reason", action="append", choices=SES_REASONS, help="only this SES reason (repeatable)"
    )
    import_ses.set_defaults(run=run_import_ses)

    export_ses = commands.add_parser(
        "export-ses",
        parents=[*parents, sync_common],
        help="copy blacklisted addresses into the SES account suppression list",
        description="Exit 1 if SES refused some addresses (listed on stderr).",
    )
    export_ses.add_argument(
        "--reason",
        action="append",
        choices=[str(reason) for reason in BlacklistReason],
        help="only entries with this reason (repeatable; default: all)",
    )
    export_ses.add_argument(
        "--rate",
        type=float,
        default=1.0,
        help="SES calls per second, list and put (SES allows about 1; default 1)",
    )
    export_ses.set_defaults(run=run_export_ses)

    migrate = commands.add_parser(
        "migrate-keys",
        parents=parents,
        help="rewrite the original service's mixed-case DynamoDB keys as normalised keys",
        description="Run once on a table written by the original service. Items whose key is "
        "not normalised are stored under the normalised key (an existing normalised entry "
        "wins) and deleted.",
    )
    migrate.add_argument(
        "--dry-run", action="store_true", help="show what would change; change nothing"
    )
    migrate.set_defaults(run=run_migrate_keys)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse_since(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date or time: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# -- stores -----------------------------------------------------------------------------------


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
    blacklist: Blacklist
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


def _close(bar: Any) -> None:
    close = getattr(bar, "close", None)
    if close is not None:
        close()


if __name__ == "__main__":
    sys.exit(main())
