"""`relay queue ...`: the operator's view of the spool, like Postfix's `postqueue`/`postsuper`.

    relay queue list [--older-than 2h] [--sender-domain D] [--state queued|dead] [--limit N]
    relay queue show ID            envelope, recipients with state/attempts/last reply, errors
    relay queue retry ID... | --all    make queued messages due now (`postqueue -f`/`-i`)
    relay queue delete ID...       remove messages for good (`postsuper -d`)
    relay queue requeue ID...      dead letter -> queue, FAILED recipients pending again
    relay queue redrive [--limit N]    requeue every dead letter (after fixing their cause)
    relay queue stats              messages, pending recipients, oldest age, dead letters, disk

`list`, `show` and `stats` take `--json` (one JSON object per line). Exit status: 0 done, 1 a
message or the spool was not found (or the spool failed: one line saying why), 2 usage (argparse,
or an action the spool backend does not offer). Never a traceback.

The spool is the one the relay uses: `RELAY_SPOOL` (`local`, the default) and `RELAY_SPOOL_DIR`
(or `--spool-dir`); with `RELAY_SPOOL=sqs`, RELAY_SQS_QUEUE_URL, RELAY_S3_BUCKET and
RELAY_S3_PREFIX (SQS cannot list messages without receiving them: `stats` and `redrive` only).
The local spool's admin methods are safe while the relay runs. A backend need not offer every
action: `stats` needs only `summary()`, `redrive` uses the backend's own `redrive(limit)` when it
has one (the SQS dead-letter queue's), else requeues dead letters one by one; the other actions
need a full `SpoolAdmin`. A backend plugs in through `OPENERS`.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from relay import queue_format as fmt
from ses_core.errors import SesCoreError
from ses_core.queue import MessageState, QueueFilter, SpoolAdmin

#: Actions that need a full `SpoolAdmin`; `stats` and `redrive` work on smaller backends.
ADMIN_ACTIONS = ("list", "show", "retry", "delete", "requeue")
#: Messages `retry --all` and `redrive` handle in one run: a queue's default cap
#: (RELAY_QUEUE_MAX_MESSAGES), so a run is bounded.
_MAX_BATCH = 1_000_000
#: Dead letters read per page by `redrive`.
_PAGE = 500
_AGE = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

OK, NOT_FOUND, USAGE = 0, 1, 2

#: Makes the spool's admin backend; called once per command.
BackendFactory = Callable[[], Any]


class QueueCommandError(Exception):
    """A one-line failure of the command, with its exit status."""

    def __init__(self, message: str, status: int = NOT_FOUND) -> None:
        super().__init__(message)
        self.status = status


def parse_age(text: str) -> float:
    """`30m`, `2h`, `1d`, `45s` or plain seconds -> seconds (argparse type)."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None:
        message = f"not an age: {text!r} (use e.g. 90, 45s, 30m, 2h, 1d)"
        raise argparse.ArgumentTypeError(message)
    return float(match["number"]) * _UNIT_SECONDS[match["unit"]]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        message = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(message)
    return value


def add_arguments(queue: argparse.ArgumentParser) -> None:
    """Register the `queue` actions and their options on `queue`'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--spool-dir",
        type=Path,
        help="the local spool directory (default: RELAY_SPOOL_DIR, else ./spool)",
    )
    actions = queue.add_subparsers(dest="queue_action", metavar="ACTION")
    actions.required = True

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, description=text, parents=[common])

    listing = action("list", "list messages, oldest first")
    listing.add_argument("--older-than", type=parse_age, metavar="AGE", help="e.g. 30m, 2h, 1d")
    listing.add_argument("--sender-domain", metavar="DOMAIN", help="the envelope sender's domain")
    listing.add_argument("--state", choices=("queued", "dead"), help="queued or dead letters")
    listing.add_argument("--limit", type=_positive, default=100, help="at most N (default 100)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = action("show", "one message's envelope, recipients and attempts")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="one JSON object")
    retry = action("retry", "make queued messages due now")
    retry.add_argument("ids", nargs="*", metavar="ID")
    retry.add_argument("--all", action="store_true", help="every queued message (a flush)")
    for name, text in (
        ("delete", "remove messages (queued or dead) for good"),
        ("requeue", "move dead letters back to the queue, due now"),
    ):
        action(name, text).add_argument("ids", nargs="+", metavar="ID")
    redrive = action("redrive", "requeue every dead letter")
    redrive.add_argument("--limit", type=_positive, help="at most N (default: all)")
    stats = action("stats", "queue depth, oldest age, dead letters, free disk")
    stats.add_argument("--json", action="store_true", help="one JSON object")
    from relay.queue_cli_sqs import add_sqs_actions  # `sweep`, for the shared spool

    add_sqs_actions(action, _ACTIONS)


def _open_local(directory: Path) -> Any:
    if not directory.is_dir():
        message = f"no spool directory at {directory} (set RELAY_SPOOL_DIR or pass --spool-dir)"
        raise QueueCommandError(message)
    from ses_core.queue.local import LocalSpool

    return LocalSpool.open(directory)


def _open_sqs(environ: Mapping[str, str]) -> Any:
    """The shared spool's admin (`SqsQueueAdmin`: stats and redrive only), from the relay's
    variables; AWS credentials, region and endpoint come from boto3's usual chain."""
    queue_url = environ.get("RELAY_SQS_QUEUE_URL", "").strip()
    bucket = environ.get("RELAY_S3_BUCKET", "").strip()
    if not queue_url or not bucket:
        message = "RELAY_SPOOL=sqs needs RELAY_SQS_QUEUE_URL and RELAY_S3_BUCKET"
        raise QueueCommandError(message, USAGE)
    import botocore.exceptions

    from ses_core.queue.sqs import SqsQueueAdmin

    try:
        return SqsQueueAdmin.from_config(
            queue_url=queue_url,
            bucket=bucket,
            prefix=environ.get("RELAY_S3_PREFIX", "").strip() or "ses-relay/",
        )
    except botocore.exceptions.BotoCoreError as exc:
        raise QueueCommandError(f"cannot reach the SQS spool: {exc}") from None


#: How each `RELAY_SPOOL` kind is opened for the command, from the spool directory and the
#: environment; a backend without an entry is reported as not supported (exit 2).
OPENERS: dict[str, Callable[[Path, Mapping[str, str]], Any]] = {
    "local": lambda directory, _environ: _open_local(directory),
    "sqs": lambda _directory, environ: _open_sqs(environ),
}


def backend_factory(args: argparse.Namespace, environ: Mapping[str, str]) -> BackendFactory:
    """The factory for the spool `environ` (RELAY_SPOOL, RELAY_SPOOL_DIR) and `args` name."""
    kind = environ.get("RELAY_SPOOL", "").strip().lower() or "local"
    directory = args.spool_dir or Path(environ.get("RELAY_SPOOL_DIR", "").strip() or "spool")
    opener = OPENERS.get(kind)
    if opener is None:
        supported = ", ".join(sorted(OPENERS))
        message = f"RELAY_SPOOL={kind}: not supported by this command (supported: {supported})"
        raise QueueCommandError(message, USAGE)
    return lambda: opener(directory, environ)


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    *,
    factory: BackendFactory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run `args.queue_action` on the spool (`factory`, else the one `environ` names)."""
    out = out or sys.stdout
    err = err or sys.stderr
    action = args.queue_action
    try:
        with _backend(factory or backend_factory(args, environ)) as backend:
            return _ACTIONS[action](backend, args, out, err, clock())
    except QueueCommandError as exc:
        print(f"queue {action}: {exc}", file=err)
        return exc.status
    except (SesCoreError, OSError) as exc:
        print(f"queue {action}: spool error: {type(exc).__name__}: {exc}", file=err)
        return NOT_FOUND


@contextlib.contextmanager
def _backend(factory: BackendFactory) -> Iterator[Any]:
    backend = factory()
    try:
        yield backend
    finally:
        close = getattr(backend, "close", None)
        if callable(close):
            close()


def _admin(backend: Any, action: str) -> SpoolAdmin:
    if isinstance(backend, SpoolAdmin):
        return backend
    offered = [name for name in ("stats", "redrive") if hasattr(backend, _NEEDS[name])]
    message = f"this spool backend does not offer {action} (it offers: {', '.join(offered)})"
    raise QueueCommandError(message, USAGE)


_NEEDS = {"stats": "summary", "redrive": "redrive"}


def _list(backend: Any, args: argparse.Namespace, out: TextIO, _err: TextIO, now: float) -> int:
    where = QueueFilter(
        state=MessageState(args.state) if args.state else None,
        min_age=args.older_than,
        sender_domain=args.sender_domain.strip().lstrip("@") if args.sender_domain else None,
        limit=args.limit,
    )
    messages = _admin(backend, "list").list(where)
    if args.json:
        out.writelines(fmt.json_line(fmt.message_object(m, now)) for m in messages)
    else:
        out.write(fmt.list_table(messages, now, where.limit))
    return OK


def _show(backend: Any, args: argparse.Namespace, out: TextIO, _err: TextIO, now: float) -> int:
    message = _admin(backend, "show").show(args.id)
    if message is None:
        raise QueueCommandError(f"no message {args.id}")
    if args.json:
        out.write(fmt.json_line(fmt.message_object(message, now)))
    else:
        out.write(fmt.show_block(message, now))
    return OK


def _each(
    ids: list[str], act: Callable[[str], bool], done: str, missing: str, out: TextIO, err: TextIO
) -> int:
    status = OK
    for message_id in ids:
        if act(message_id):
            print(f"{message_id}: {done}", file=out)
        else:
            print(f"{message_id}: {missing}", file=err)
            status = NOT_FOUND
    return status


def _retry(backend: Any, args: argparse.Namespace, out: TextIO, err: TextIO, _now: float) -> int:
    admin = _admin(backend, "retry")
    if args.all == bool(args.ids):
        raise QueueCommandError("give message IDs or --all (not both)", USAGE)
    ids = args.ids
    if args.all:
        ids = [m.id for m in admin.list(QueueFilter(MessageState.QUEUED, limit=_MAX_BATCH))]
    status = _each(ids, admin.retry_now, "due now", "no such queued message", out, err)
    if args.all:
        print(f"{len(ids)} message(s) due now", file=out)
    return status


def _delete(backend: Any, args: argparse.Namespace, out: TextIO, err: TextIO, _now: float) -> int:
    admin = _admin(backend, "delete")
    return _each(args.ids, admin.delete, "deleted", "no such message", out, err)


def _requeue(backend: Any, args: argparse.Namespace, out: TextIO, err: TextIO, _now: float) -> int:
    admin = _admin(backend, "requeue")
    return _each(args.ids, admin.requeue, "requeued", "no such dead letter", out, err)


def _redrive(backend: Any, args: argparse.Namespace, out: TextIO, _err: TextIO, _now: float) -> int:
    limit = args.limit or _MAX_BATCH
    own = getattr(backend, "redrive", None)
    skipped = 0
    if callable(own):
        result = own(limit)  # an int, or a result with `moved` and `skipped` (SQS)
        moved = int(getattr(result, "moved", result))
        skipped = int(getattr(result, "skipped", 0))
    else:
        admin = _admin(backend, "redrive")
        target = min(limit, admin.summary().dead_letters)
        moved = 0
        # Each page is re-read: requeued messages leave the dead-letter store, so the next page
        # holds the next ones; `target` bounds the loop even if letters keep arriving.
        while moved < target:
            page = admin.list(QueueFilter(MessageState.DEAD, limit=min(_PAGE, target - moved)))
            if not page:
                break
            requeued = sum(1 for message in page if admin.requeue(message.id))
            if not requeued:  # another operator got there first: stop rather than spin
                break
            moved += requeued
    print(f"{moved} dead letter(s) requeued", file=out)
    if skipped:
        print(f"{skipped} dead letter(s) skipped (unreadable, left where they are)", file=out)
    return OK


def _stats(backend: Any, args: argparse.Namespace, out: TextIO, _err: TextIO, now: float) -> int:
    summary = getattr(backend, "summary", None)
    if not callable(summary):
        raise QueueCommandError("this spool backend does not offer stats", USAGE)
    stats = summary()
    if args.json:
        out.write(fmt.json_line(fmt.stats_object(stats, now)))
    else:
        out.write(fmt.stats_block(stats, now))
    return OK


_ACTIONS: dict[str, Callable[[Any, argparse.Namespace, TextIO, TextIO, float], int]] = {
    "list": _list,
    "show": _show,
    "retry": _retry,
    "delete": _delete,
    "requeue": _requeue,
    "redrive": _redrive,
    "stats": _stats,
}
