"""The shared spool: envelopes on an SQS standard queue, bodies in S3, for several replicas.

`SqsSpool` implements the `Spool` port (delivery and the relay use it like the local spool);
`SqsQueueAdmin` is what the `queue` command can do with it: approximate counts, redrive from the
dead-letter queue, the orphan-body sweep (SQS cannot list or search messages without receiving
them, so there is no `list` or `show`). SQS standard queues deliver at least once: exactly-once
delivery per recipient holds in the normal case, not after every failure (see `_spool`).

    spool = SqsSpool.from_config(queue_url=..., bucket=..., prefix="ses-relay/", region=...)
"""

from ses_core.queue.sqs._admin import SqsQueueAdmin
from ses_core.queue.sqs._bodies import PENDING_TAG_KEY, PENDING_TAG_VALUE
from ses_core.queue.sqs._redrive import RedriveResult
from ses_core.queue.sqs._settings import SQS_MAX_DELAY, SqsSpoolSettings
from ses_core.queue.sqs._spool import SqsSpool
from ses_core.queue.sqs._sweeper import DEFAULT_ORPHAN_AGE, SweepResult

__all__ = [
    "DEFAULT_ORPHAN_AGE",
    "PENDING_TAG_KEY",
    "PENDING_TAG_VALUE",
    "SQS_MAX_DELAY",
    "RedriveResult",
    "SqsQueueAdmin",
    "SqsSpool",
    "SqsSpoolSettings",
    "SweepResult",
]
