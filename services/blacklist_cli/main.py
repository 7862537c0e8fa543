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
    blacklist-cli replay-failed STORE --queue-url URL [--max N] [--wait-seconds S]
                               [--soft-bounce-thresholds RULES] [--dry-run]
        (the notifications the Lambda failed on after its retries, from its failed-invocation
        queue: processed as the Lambda would, deleted once written)

Exit codes:
    0  success; `check`: no given address is blacklisted
    1  `check`: at least one address is blacklisted; `remove`: at least one address was not
       blacklisted; `export-ses`: SES refused at least one address; `replay-failed`: at least
       one message was kept (unreadable or failed; listed on stderr)
    2  usage error: bad arguments, an invalid address, no AWS region, missing SQLite file,
       migrate-keys on a SQLite file
    3  AWS credentials missing, or rejected by AWS (including access denied)
    4  the blacklist store, SES or SQS failed (unreachable, throttled, table missing, ...)
    130 interrupted (Ctrl-C)

This module runs one command and maps its errors to those exit codes; the arguments are
declared in `parser.py` and the commands live in `commands.py`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

from blacklist_cli.clients import AwsClients, Boto3Clients
from blacklist_cli.commands import Context, ExitCode, UsageError
from blacklist_cli.parser import build_parser
from ses_core.errors import BlacklistUnavailable, InvalidAddress

log = logging.getLogger(__name__)

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


if __name__ == "__main__":
    sys.exit(main())
