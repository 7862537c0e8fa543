"""JSON-lines logging: one object per line, cheap enough for one line per SMTP transaction.

`JsonFormatter` turns every record into `{"ts", "level", "logger", "msg", ...extra}`; fields
passed as `extra={"fields": {...}}` are merged at the top level, which is how the handler writes
its per-transaction line. Only `main()` installs it (`setup_logging`): libraries just log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

#: Noisy per-command logs of aiosmtpd (peer, every recipient); the relay writes its own line.
_QUIET_LOGGERS = ("mail.log",)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object (UTC timestamp, level, logger, message, fields)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human-readable lines for `RELAY_LOG_FORMAT=text`, with the fields appended as JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line = f"{line} {json.dumps(fields, ensure_ascii=False, default=str)}"
        return line


def setup_logging(
    level: str = "INFO", *, json_lines: bool = True, stream: TextIO | None = None
) -> None:
    """Install one stderr handler on the root logger (entry points only)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _utc_timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
