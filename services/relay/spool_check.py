"""What `relay check-config` says about the local spool: can the relay use its directory, and
how much room is there.

Only the file system is read (no spool is opened, nothing is written), so the check is safe next
to a running relay. A directory the relay could not create or write is a configuration error
(start-up would stop on it too); free space below RELAY_SPOOL_MIN_FREE is a warning, since the
relay starts but answers 452 until space is freed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from relay._env import ConfigError
from relay.queue_settings import QueueSettings, describe_size
from relay.variables_queue import RELAY_SPOOL_DIR, RELAY_SPOOL_MIN_FREE


def check_spool(settings: QueueSettings) -> tuple[str, list[str]]:
    """(one summary line, warnings) for the spool; `ConfigError` when it cannot be used."""
    if settings.sqs is not None:  # nothing local to check; AWS is not contacted
        sqs = settings.sqs
        return f"SQS spool {sqs.queue_url}, bodies in s3://{sqs.bucket}/{sqs.prefix}", []
    directory = settings.spool_dir
    if directory is None:
        return "spool in memory", []
    existing = _nearest_existing(directory.absolute())
    if existing != directory.absolute() and not existing.is_dir():
        raise ConfigError(f"{RELAY_SPOOL_DIR.name}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "write to" if existing == directory.absolute() else "create"
        message = f"{RELAY_SPOOL_DIR.name}: this user cannot {verb} the spool {directory}"
        raise ConfigError(message)
    free = shutil.disk_usage(existing).free
    state = "exists" if existing == directory.absolute() else "will be created"
    line = (
        f"spool {directory} ({state}, {describe_size(free)} free,"
        f" minimum {describe_size(settings.min_free_bytes)})"
    )
    warnings = []
    if free < settings.min_free_bytes:
        warnings.append(
            f"{RELAY_SPOOL_MIN_FREE.name}: only {describe_size(free)} free at {directory}: new mail"
            " will be refused with 452 until space is freed"
        )
    return line, warnings


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
