"""Unit tests for relay.logs: one JSON object per line, fields merged, exceptions included."""

from __future__ import annotations

import io
import json
import logging

from relay.logs import JsonFormatter, TextFormatter, setup_logging


def record(**fields: object) -> logging.LogRecord:
    """A log record with `fields` attached as the handler does."""
    rec = logging.LogRecord("relay.transactions", logging.INFO, __file__, 1, "tx %s", ("1",), None)
    rec.fields = fields
    return rec


def test_json_line_merges_fields() -> None:
    """The record becomes one JSON line with ts, level, logger, msg and the extra fields."""
    line = JsonFormatter().format(record(outcome="accepted", recipients=2))
    assert "\n" not in line
    payload = json.loads(line)
    assert payload["msg"] == "tx 1" and payload["level"] == "INFO"
    assert payload["outcome"] == "accepted" and payload["recipients"] == 2
    assert payload["ts"].endswith("Z")


def test_exception_is_embedded_in_the_line() -> None:
    """A traceback is carried inside the JSON object, keeping one line per record."""
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exc"]


def test_text_format_and_setup() -> None:
    """setup_logging installs one handler; the text format appends the fields as JSON."""
    stream = io.StringIO()
    setup_logging("INFO", json_lines=False, stream=stream)
    try:
        logging.getLogger("relay.test").info("hello", extra={"fields": {"a": 1}})
        assert stream.getvalue().rstrip().endswith('hello {"a": 1}')
        assert isinstance(logging.getLogger().handlers[0].formatter, TextFormatter)
    finally:
        logging.getLogger().handlers.clear()
