"""`relay queue sweep`: the shared spool's (RELAY_SPOOL=sqs) one action of its own.

    relay queue sweep [--older-than 6h]    delete bodies whose envelope never reached SQS

An accept writes the body to S3 (tagged pending), then the envelope to SQS; a crash between the
two leaves a body no envelope points to. Every relay sweeps them hourly; this runs the same
sweep now, for example before emptying a bucket or after an outage. Only objects under
RELAY_S3_PREFIX, older than `--older-than` and still tagged pending are deleted, so it is safe
next to running relays (a younger pending body may be an accept in progress).

`stats` and `redrive` on the shared spool live in `relay.queue_cli`, which calls
`add_sqs_actions` to register this one; another backend answers `sweep` with a usage error (2).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

#: The default age of an orphan (`ses_core.queue.sqs.DEFAULT_ORPHAN_AGE`, 6 hours).
DEFAULT_AGE = "6h"

#: What `relay.queue_cli` runs for an action: (backend, args, out, err, now) -> exit status.
Action = Callable[[Any, argparse.Namespace, TextIO, TextIO, float], int]


def add_sqs_actions(
    action: Callable[[str, str], argparse.ArgumentParser],
    actions: MutableMapping[str, Action],
) -> None:
    """Register `sweep` with `relay.queue_cli`'s parser factory `action` and its table of
    handlers `actions`."""
    from relay.queue_cli import parse_age

    sweep = action("sweep", "delete S3 bodies whose envelope never reached SQS (RELAY_SPOOL=sqs)")
    sweep.add_argument(
        "--older-than",
        type=parse_age,
        default=parse_age(DEFAULT_AGE),
        metavar="AGE",
        help=f"only bodies written longer ago than this (default {DEFAULT_AGE})",
    )
    actions["sweep"] = run_sweep


def run_sweep(
    backend: Any, args: argparse.Namespace, out: TextIO, _err: TextIO, _now: float
) -> int:
    """Sweep the shared spool's orphan bodies and say what was done; a usage error (exit 2) on
    another backend."""
    from relay.queue_cli import USAGE, QueueCommandError

    sweep = getattr(backend, "sweep_orphan_bodies", None)
    if not callable(sweep):
        message = "this spool backend does not offer sweep (only RELAY_SPOOL=sqs has S3 bodies)"
        raise QueueCommandError(message, USAGE)
    result = sweep(args.older_than)
    print(
        f"{result.checked} old bod(ies) checked: {result.removed} orphan(s) removed,"
        f" {result.kept} kept",
        file=out,
    )
    return 0
