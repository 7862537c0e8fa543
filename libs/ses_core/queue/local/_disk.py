"""What the spool asks of its directory: private modes, durable entries, free space, a lock.

Bodies are personal data, so the directory is 0700 and every file in it 0600 whatever the
process umask (a library must not change the umask: it is process-wide and racy with threads).
A directory found with looser modes is tightened, with a warning, rather than refused: the
relay's volume may have been created by an image or an operator with defaults.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: `FileLock.exclusive_within` polls: its first pause, and its longest (seconds).
_FIRST_PAUSE = 50e-6
_LONGEST_PAUSE = 1e-3

DIR_MODE = 0o700
FILE_MODE = 0o600


def prepare_directory(directory: Path) -> None:
    """Create `directory` (and parents) mode 0700, or tighten an existing one to 0700."""
    if not directory.exists():
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fsync_directory(directory.parent)
    if not directory.is_dir():
        message = f"{directory} is not a directory"
        raise NotADirectoryError(message)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "spool directory %s had mode %o; tightened to %o (message bodies are personal data)",
            directory,
            mode,
            DIR_MODE,
        )
    if mode != DIR_MODE:
        directory.chmod(DIR_MODE)


def create_private_file(path: Path) -> None:
    """Create `path` empty with mode 0600 if missing; tighten it to 0600 if it exists."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten_files(paths: list[Path]) -> None:
    """Set mode 0600 on those of `paths` that exist (SQLite's -wal/-shm follow the main file's
    mode when it creates them; this covers files left by an older, looser setup)."""
    for path in paths:
        try:
            if stat.S_IMODE(path.stat().st_mode) != FILE_MODE:
                path.chmod(FILE_MODE)
        except FileNotFoundError:
            continue


def fsync_directory(directory: Path) -> None:
    """Make the directory's entries (files created, renamed into it) durable.

    fsync of a file makes its content durable, not its name: until the directory itself is
    synced, a power cut may leave a committed WAL without an entry pointing at it.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def statvfs_free_bytes(directory: Path) -> Callable[[], int]:
    """A reader of the bytes an unprivileged process may still write where `directory` is."""

    def free_bytes() -> int:
        reading = os.statvfs(directory)
        return reading.f_bavail * reading.f_frsize

    return free_bytes


class FreeSpace:
    """Free bytes read at most once per `interval` seconds, so asking at every MAIL is cheap.

    `invalidate` forces the next reading (after the disk said it is full).
    """

    def __init__(
        self,
        read: Callable[[], int],
        interval: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._interval = interval
        self._monotonic = monotonic
        self._value: int | None = None
        self._read_at = 0.0

    def bytes(self) -> int:
        """The last reading, refreshed when older than the interval."""
        now = self._monotonic()
        if self._value is None or now - self._read_at >= self._interval:
            try:
                self._value = self._read()
            except OSError as exc:
                # Cannot tell: keep admitting on the last reading (or say "plenty"); a put that
                # then fails on the disk is refused with nothing stored anyway.
                log.warning("cannot read free space of the spool: %s", exc)
                if self._value is None:
                    self._value = 2**62
            self._read_at = now
        return self._value

    def invalidate(self) -> None:
        """Read again at the next `bytes` call."""
        self._value = None


class FileLock:
    """An advisory `flock` on a 0600 file in the spool directory, released at close or death.

    The kernel drops it when the process dies (kill -9 included), so a crash never leaves a
    stale lock for the restarted relay to trip over.
    """

    def __init__(self, path: Path) -> None:
        create_private_file(path)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    def try_exclusive(self) -> bool:
        """Take the lock alone if nobody holds it in any mode; False otherwise."""
        return self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB)

    def shared(self) -> None:
        """Hold it shared, waiting while someone holds it exclusively (a short recovery)."""
        self._flock(fcntl.LOCK_SH)

    def exclusive_within(self, timeout: float) -> bool:
        """Take the lock alone, waiting at most `timeout` seconds; False if it stayed taken.

        `flock` has no timed wait and a blocking one could hang on a stopped holder, so this
        polls: 50 µs first, doubling up to 1 ms. A holder keeps it for one commit (a fraction
        of a millisecond), so the waiter gets it within a few tens of microseconds of its
        release, where SQLite's busy handler would sleep one millisecond or more.
        """
        if self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB):
            return True
        deadline = time.monotonic() + timeout
        pause = _FIRST_PAUSE
        while time.monotonic() < deadline:
            time.sleep(pause)
            if self._flock(fcntl.LOCK_EX | fcntl.LOCK_NB):
                return True
            pause = min(pause * 2, _LONGEST_PAUSE)
        return False

    def unlock(self) -> None:
        """Release a lock taken with `exclusive_within` (the file stays open)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _flock(self, operation: int) -> bool:
        if self._fd is None:
            raise ValueError("lock file is closed")
        try:
            fcntl.flock(self._fd, operation)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        """Release the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
