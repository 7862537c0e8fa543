"""The sweeper: removes bodies whose envelope never reached SQS (an accept that failed half-way).

`put` writes the body tagged pending, sends the envelope, then removes the tag (see `_bodies`).
When the send fails, `put` deletes the body itself; the sweeper is for what that could not
clean: a crash or a failed delete between the two writes. It lists the bodies under the prefix
older than `older_than` seconds and deletes those still tagged pending; untagged objects are
committed bodies (or not ours) and are kept. Listing is cheap (1,000 keys per call); a tag is read
only for the old objects, which in a healthy queue are the few long-deferred messages.
"""

from __future__ import annotations

import logging

import attrs

from ses_core.queue.sqs._aws import AWS_ERRORS, unavailable
from ses_core.queue.sqs._bodies import BodyStore

log = logging.getLogger(__name__)

#: Default age (seconds) before an uncommitted body counts as an orphan: far above the seconds
#: an accept takes, and above the first delivery attempt that re-commits a body whose tag
#: removal failed.
DEFAULT_ORPHAN_AGE = 6 * 3600.0


@attrs.frozen
class SweepResult:
    """What one sweep did.

    Attributes:
        checked: bodies old enough to be looked at.
        removed: of those, uncommitted ones deleted (their envelope never reached SQS).
        kept: of those, committed ones kept.
    """

    checked: int
    removed: int
    kept: int


def sweep_orphan_bodies(store: BodyStore, *, older_than: float, now: float) -> SweepResult:
    """Delete the bodies under the store's prefix last written before `now - older_than` that
    are still tagged pending. Blocking; `SpoolUnavailable` if S3 fails (what was deleted so far
    stays deleted, and the next sweep carries on)."""
    cutoff = now - older_than
    checked = removed = 0
    try:
        paginator = store.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=store.bucket, Prefix=store.prefix):
            for item in page.get("Contents", ()):
                if item["LastModified"].timestamp() > cutoff:
                    continue
                checked += 1
                if store.is_pending(item["Key"]):
                    store.delete(item["Key"])
                    removed += 1
                    log.info("swept orphan body %s (its envelope never reached SQS)", item["Key"])
    except AWS_ERRORS as exc:
        raise unavailable("S3", "sweep", exc) from None
    return SweepResult(checked=checked, removed=removed, kept=checked - removed)
