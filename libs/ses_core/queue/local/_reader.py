"""The spool's read connection, used from one thread of its own.

WAL lets this connection read while the writer thread commits (a reader sees the last commit
before its statement began), so leases and bodies never wait for an fsync. sqlite3 calls block,
so the event loop hands them to this thread instead of running them itself; one thread suffices
because every read is a few index seeks (a body is one rowid lookup).
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ses_core.errors import SpoolCorrupt, SpoolUnavailable
from ses_core.queue.local._recovery import connect

T = TypeVar("T")


class Reader:
    """Runs read functions of a connection on a dedicated thread."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.connection = connect(path, busy_timeout)
        self.connection.execute("PRAGMA query_only = 1")
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "spool-reader")

    def submit(self, read: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Schedule `read(connection)`; its sqlite3 errors come back as `SpoolUnavailable`, a row
        that does not parse as `SpoolCorrupt`."""
        try:
            return self._executor.submit(self._guarded, read)
        except RuntimeError as exc:  # shut down
            raise SpoolUnavailable("the spool is closed") from exc

    def _guarded(self, read: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return read(self.connection)
        except sqlite3.Error as exc:
            message = f"the spool cannot be read: {exc}"
            raise SpoolUnavailable(message) from exc
        except SpoolCorrupt:
            raise
        except (ValueError, KeyError, TypeError) as exc:  # a stored envelope that does not parse
            message = f"the spool holds a row that cannot be read: {exc!r}"
            raise SpoolCorrupt(message) from exc

    def close(self) -> None:
        """Finish queued reads and close the connection."""
        self._executor.shutdown(wait=True)
        self.connection.close()
