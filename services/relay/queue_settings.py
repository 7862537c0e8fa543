"""The queue's settings (`RELAY_DELIVERY`, `RELAY_SPOOL*`, `RELAY_QUEUE_*`), read and checked.

Kept apart from `relay.config` so that the configuration stays small: `RelayConfig.queue` holds
one `QueueSettings`. Built in code (tests, benchmarks) the spool is in memory (`spool_dir` None),
so a test never leaves a `./spool` directory behind; read from the environment it is always a
directory, since a 250 in queue mode promises the message is on disk, or, with RELAY_SPOOL=sqs,
the shared spool's queue and bucket (`SqsSettings`; then REDIS_URL is required: replicas with a
limiter each would send at that many times the SES rate).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from relay import variables_queue as q
from relay._env import ConfigError, EnvReader
from relay.variables import REDIS_URL

#: SQS's longest visibility timeout (12 hours).
MAX_VISIBILITY = 43_200

#: Size suffixes RELAY_SPOOL_MIN_FREE accepts (case-insensitive; a bare number is bytes).
_UNITS = {
    "": 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


#: The spool backends RELAY_SPOOL names.
SPOOL_KINDS = ("local", "sqs")


@attrs.frozen
class SqsSettings:
    """Where the shared spool lives (RELAY_SPOOL=sqs).

    Attributes:
        queue_url: the SQS standard queue of envelopes (RELAY_SQS_QUEUE_URL).
        bucket: the S3 bucket of bodies (RELAY_S3_BUCKET).
        prefix: key prefix of the bodies (RELAY_S3_PREFIX).
        visibility_timeout: seconds a received envelope stays hidden from other replicas
            (RELAY_SQS_VISIBILITY_TIMEOUT), extended while it is delivered.
        wait_time: long-poll seconds of one receive (not a variable).
        stats_interval: seconds between two readings of the queue depths: each costs two
            GetQueueAttributes calls, and SQS's counts lag by about a minute anyway (not a
            variable: tests shorten it).
        sweep_interval: seconds (jittered) between two sweeps of orphan bodies.
    """

    queue_url: str
    bucket: str
    prefix: str = q.RELAY_S3_PREFIX.default
    visibility_timeout: int = q.RELAY_SQS_VISIBILITY_TIMEOUT.default
    wait_time: int = 2
    stats_interval: float = 30.0
    sweep_interval: float = 3600.0


@attrs.frozen
class QueueSettings:
    """How accepted mail is delivered, and where the spool is.

    Attributes:
        delivery: `queue` (250 once on disk, delivered in the background) or `direct` (250 once
            SES accepted; deferred recipients after a partial acceptance go to the spool).
        spool: the backend, `local` or `sqs`.
        spool_dir: the local spool's directory; None = in memory (code-built configs only) or
            the shared spool.
        sqs: the shared spool's queue and bucket (RELAY_SPOOL=sqs), else None.
        min_free_bytes: free disk below which new mail is refused with 452.
        max_messages: queued messages beyond which new mail is refused with 452.
        lifetime: seconds a deferred recipient is retried before it expires (DSN).
        workers: messages delivered from the queue at once.
        attempt_timeout: seconds per delivery attempt.
        retry_delay: seconds before recipients SES deferred in direct mode are tried again from
            the spool (not a variable: tests shorten it).
    """

    delivery: str = q.RELAY_DELIVERY.default
    spool: str = q.RELAY_SPOOL.default
    spool_dir: Path | None = None
    sqs: SqsSettings | None = None
    min_free_bytes: int = q.RELAY_SPOOL_MIN_FREE.default
    max_messages: int = q.RELAY_QUEUE_MAX_MESSAGES.default
    lifetime: float = q.RELAY_QUEUE_LIFETIME.default
    workers: int = q.RELAY_QUEUE_WORKERS.default
    attempt_timeout: float = q.RELAY_QUEUE_ATTEMPT_TIMEOUT.default
    retry_delay: float = 30.0

    @property
    def queue_mode(self) -> bool:
        """True when a 250 means "on disk" rather than "accepted by SES"."""
        return self.delivery == "queue"


def read_queue_settings(environ: Mapping[str, str]) -> QueueSettings:
    """The queue's settings from `environ`; `ConfigError` (one line) on the first bad one."""
    env = EnvReader(environ)
    delivery = env.choice(q.RELAY_DELIVERY, ("queue", "direct"))
    spool = str(env.text(q.RELAY_SPOOL)).lower()
    if spool not in SPOOL_KINDS:
        message = f"{q.RELAY_SPOOL.name}: expected 'local' or 'sqs', got {spool!r}"
        raise ConfigError(message)
    sqs = read_sqs_settings(env) if spool == "sqs" else None
    spool_dir = None
    if sqs is None:
        spool_dir = env.path(q.RELAY_SPOOL_DIR)
        if spool_dir.exists() and not spool_dir.is_dir():
            raise ConfigError(f"{q.RELAY_SPOOL_DIR.name}: not a directory: {spool_dir}")
    return QueueSettings(
        delivery=delivery,
        spool=spool,
        spool_dir=spool_dir,
        sqs=sqs,
        min_free_bytes=parse_size(environ.get(q.RELAY_SPOOL_MIN_FREE.name, "")),
        max_messages=env.integer(q.RELAY_QUEUE_MAX_MESSAGES, minimum=1),
        lifetime=env.number(q.RELAY_QUEUE_LIFETIME, minimum=1.0),
        workers=env.integer(q.RELAY_QUEUE_WORKERS, minimum=1),
        attempt_timeout=env.number(q.RELAY_QUEUE_ATTEMPT_TIMEOUT, minimum=0.1),
    )


def read_sqs_settings(env: EnvReader) -> SqsSettings:
    """RELAY_SPOOL=sqs: the queue and bucket (both required) and REDIS_URL (required: N
    replicas with separate limiters would send at N times the rate)."""
    for variable in (q.RELAY_SQS_QUEUE_URL, q.RELAY_S3_BUCKET):
        if not env.is_set(variable):
            raise ConfigError(f"{variable.name}: required when {q.RELAY_SPOOL.name}=sqs")
    if not env.is_set(REDIS_URL):
        message = (
            f"{REDIS_URL.name}: required when {q.RELAY_SPOOL.name}=sqs (replicas sharing the queue"
            " must share one send rate: N replicas with separate limiters would send at N times"
            " the rate)"
        )
        raise ConfigError(message)
    prefix = str(env.text(q.RELAY_S3_PREFIX))
    if prefix.startswith("/"):
        raise ConfigError(f"{q.RELAY_S3_PREFIX.name}: an S3 key prefix starts without '/'")
    return SqsSettings(
        queue_url=str(env.text(q.RELAY_SQS_QUEUE_URL)),
        bucket=str(env.text(q.RELAY_S3_BUCKET)),
        prefix=prefix,
        visibility_timeout=_visibility(env),
    )


def _visibility(env: EnvReader) -> int:
    """RELAY_SQS_VISIBILITY_TIMEOUT: SQS allows 0 to 43200 s; below 2 s a lease could lapse
    between two extensions."""
    seconds = env.integer(q.RELAY_SQS_VISIBILITY_TIMEOUT, minimum=2)
    if seconds > MAX_VISIBILITY:
        message = (
            f"{q.RELAY_SQS_VISIBILITY_TIMEOUT.name}: at most {MAX_VISIBILITY} (12 hours),"
            f" got {seconds}"
        )
        raise ConfigError(message)
    return seconds


def parse_size(text: str) -> int:
    """RELAY_SPOOL_MIN_FREE: bytes, or a number with a unit (`500MiB`, `1 GB`); empty = default."""
    value = text.strip()
    if not value:
        return q.RELAY_SPOOL_MIN_FREE.default
    match = _SIZE.fullmatch(value)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _UNITS:
        message = (
            f"{q.RELAY_SPOOL_MIN_FREE.name}: expected bytes or a size like 500MiB or 1GB,"
            f" got {value!r}"
        )
        raise ConfigError(message)
    return int(float(match.group(1)) * _UNITS[unit])


def describe_size(size: int) -> str:
    """`size` bytes as `check-config` shows it: exact when it is a whole number of a unit
    (`1GiB`, `500MiB`, as a setting is written), else to a tenth (`65.9GiB`, a free-space
    reading), or plain bytes below 1 KiB."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        factor = _UNITS[unit.upper()]
        if size >= factor:
            if size % factor == 0:
                return f"{size // factor}{unit}"
            return f"{size / factor:.1f}{unit}"
    return str(size)
