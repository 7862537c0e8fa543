"""The CLI's arguments: one subcommand per job, each naming the command that runs it.

Every command that touches the blacklist takes the same store options (`--table` with
`--region`, or `--sqlite`), declared once as a parent parser.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from blacklist_cli.commands import (
    run_add,
    run_check,
    run_export_ses,
    run_import_ses,
    run_list,
    run_migrate_keys,
    run_remove,
    run_replay_failed,
)
from blacklist_cli.suppression_sync import SES_REASONS
from ses_core.blacklist import BlacklistReason


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
        epilog="Exit codes: 0 ok, 1 negative answer (see --help of check/remove/export-ses/"
        "replay-failed), 2 usage, 3 credentials, 4 store, SES or SQS unavailable.",
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

    replay = commands.add_parser(
        "replay-failed",
        parents=parents,
        help="replay the notifications the Lambda failed on, from its failed-invocation queue",
        description="Runs each queued event through the Lambda's own processing into the "
        "blacklist and deletes the message once done. Unreadable or failed messages are "
        "reported on stderr and kept (exit 1); an unavailable store stops the run (exit 4).",
    )
    replay.add_argument(
        "--queue-url",
        required=True,
        metavar="URL",
        help="the stack's FailedInvocationQueueUrl output (its region is read from the URL)",
    )
    replay.add_argument(
        "--max",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="replay at most N messages (default 1000); the run also ends when the queue is empty",
    )
    replay.add_argument(
        "--wait-seconds",
        type=int,
        default=5,
        metavar="S",
        help="long-poll each receive up to S seconds, 0 to 20 (default 5)",
    )
    replay.add_argument(
        "--soft-bounce-thresholds",
        default="",
        metavar="RULES",
        help="the Lambda's SoftBounceThresholds (e.g. Transient/General=3), so the replay "
        "decides as it would; default: none",
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be written; write nothing, delete nothing",
    )
    replay.set_defaults(run=run_replay_failed)
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
