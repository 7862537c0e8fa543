"""The queue's environment variables (`RELAY_DELIVERY`, `RELAY_SPOOL*`, `RELAY_QUEUE_*`, and the
shared spool's `RELAY_SQS_*` / `RELAY_S3_*`).

Defined apart from `relay.variables` so that module stays under the size rule; it lists them in
`VARIABLES` (the README's order) next to the settings they go with.
"""

from __future__ import annotations

from pathlib import Path

from relay.variable import Variable

GIB = 1024**3

RELAY_DELIVERY = Variable(
    "RELAY_DELIVERY",
    "`queue`: a 250 means the message is stored (on disk in RELAY_SPOOL_DIR, or in SQS and S3),"
    " then delivered at the SES rate, retried, or bounced to its sender (DSN); `direct`: a 250"
    " means SES accepted it.",
    "queue",
    "direct",
)
RELAY_SPOOL = Variable(
    "RELAY_SPOOL",
    "Where queued mail is kept: `local` (a directory on this host's disk) or `sqs` (an SQS queue"
    " and an S3 bucket shared by every replica; needs REDIS_URL).",
    "local",
    "sqs",
)
RELAY_SPOOL_DIR = Variable(
    "RELAY_SPOOL_DIR",
    "Directory of the local spool (created mode 0700: it holds message bodies); put it on a"
    " persistent volume. Used in both delivery modes (direct mode queues deferred recipients).",
    Path("spool"),
    "/var/lib/ses-relay/spool",
    shown="./{} (image: /var/lib/ses-relay/spool)",
)
RELAY_SPOOL_MIN_FREE = Variable(
    "RELAY_SPOOL_MIN_FREE",
    "Free disk space the spool keeps: below it new mail gets `452 4.3.1` at MAIL/RCPT (bytes, or"
    " with KiB/MiB/GiB/KB/MB/GB).",
    GIB,
    "500MiB",
    shown="1GiB",
)
RELAY_QUEUE_MAX_MESSAGES = Variable(
    "RELAY_QUEUE_MAX_MESSAGES",
    "Messages the queue holds before new mail gets `452 4.3.1` at MAIL/RCPT.",
    1_000_000,
    "200000",
)
RELAY_QUEUE_LIFETIME = Variable(
    "RELAY_QUEUE_LIFETIME",
    "Seconds a deferred recipient is retried before it expires and its sender gets a DSN.",
    432_000.0,
    "86400",
    shown="{} (5 days)",
)
RELAY_QUEUE_WORKERS = Variable(
    "RELAY_QUEUE_WORKERS",
    "Messages delivered from the queue at once (the rate limiter still sets the pace).",
    32,
    "64",
)
RELAY_QUEUE_ATTEMPT_TIMEOUT = Variable(
    "RELAY_QUEUE_ATTEMPT_TIMEOUT",
    "Seconds one delivery attempt from the queue may take (rate wait included) before it is"
    " retried later.",
    30.0,
    "60",
)
RELAY_SQS_QUEUE_URL: Variable[str | None] = Variable(
    "RELAY_SQS_QUEUE_URL",
    "With RELAY_SPOOL=sqs: the SQS standard queue of envelopes (with a redrive policy to its"
    " dead-letter queue).",
    None,
    "https://sqs.eu-west-1.amazonaws.com/123456789012/ses-relay-spool",
)
RELAY_S3_BUCKET: Variable[str | None] = Variable(
    "RELAY_S3_BUCKET",
    "With RELAY_SPOOL=sqs: the S3 bucket of message bodies.",
    None,
    "ses-relay-spool-123456789012",
)
RELAY_S3_PREFIX = Variable(
    "RELAY_S3_PREFIX",
    "With RELAY_SPOOL=sqs: key prefix of the bodies in RELAY_S3_BUCKET.",
    "ses-relay/",
    "relay-prod/",
)
RELAY_SQS_VISIBILITY_TIMEOUT = Variable(
    "RELAY_SQS_VISIBILITY_TIMEOUT",
    "With RELAY_SPOOL=sqs: seconds a received envelope stays hidden from other replicas (extended"
    " while it is delivered): how late a crashed replica's messages come back.",
    60,
    "120",
)

#: The queue's variables, in the README's order.
QUEUE_VARIABLES: tuple[Variable[object], ...] = (
    RELAY_DELIVERY,
    RELAY_SPOOL,
    RELAY_SPOOL_DIR,
    RELAY_SPOOL_MIN_FREE,
    RELAY_SQS_QUEUE_URL,
    RELAY_S3_BUCKET,
    RELAY_S3_PREFIX,
    RELAY_SQS_VISIBILITY_TIMEOUT,
    RELAY_QUEUE_MAX_MESSAGES,
    RELAY_QUEUE_LIFETIME,
    RELAY_QUEUE_WORKERS,
    RELAY_QUEUE_ATTEMPT_TIMEOUT,
)
