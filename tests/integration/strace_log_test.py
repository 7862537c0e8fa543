"""Tests for the strace log reader the fsync-before-250 test relies on (`strace_log`): a check
that cannot fail proves nothing, so these feed it logs where the order is wrong."""

from __future__ import annotations

from tests.integration.strace_log import parse, unsynced_replies

WAL = "/spool/spool.sqlite3-wal"
CLIENT = "7<TCP:[127.0.0.1:2525->127.0.0.1:40000]>"


def check(log: str) -> tuple[int, int]:
    replies, unsynced = unsynced_replies(
        parse(log.strip().splitlines()),
        reply="250 2.0.0 Ok: queued as",
        listen_port=2525,
        durable_files=frozenset({WAL}),
    )
    return len(replies), len(unsynced)


DATA = f'10 12:00:00.000001 read({CLIENT}, "Hello.\\r\\n.\\r\\n", 65536) = 11\n'
SYNC = f"11 12:00:00.000002 fdatasync(9<{WAL}>) = 0\n"
REPLY = f'10 12:00:00.000003 write({CLIENT}, "250 2.0.0 Ok: queued as 1\\r\\n", 28) = 28\n'


def test_fsync_between_data_and_reply_passes() -> None:
    """DATA read, then the WAL synced, then the 250: in order."""
    assert check(DATA + SYNC + REPLY) == (1, 0)


def test_reply_before_the_fsync_is_caught() -> None:
    """A 250 written before the WAL's fdatasync returned is reported."""
    assert check(DATA + REPLY + SYNC) == (1, 1)


def test_fsync_before_the_data_does_not_count() -> None:
    """An fdatasync that started before the message's DATA was read cannot have stored it."""
    assert check(SYNC + DATA + REPLY) == (1, 1)


def test_split_calls_use_entry_and_return_positions() -> None:
    """A sync still running when the reply is written (unfinished/resumed) does not count; one
    that resumed before the write does; a failed sync never counts."""
    running = (
        DATA
        + f"11 12:00:00.000002 fdatasync(9<{WAL}> <unfinished ...>\n"
        + REPLY
        + "11 12:00:00.000004 <... fdatasync resumed>) = 0\n"
    )
    assert check(running) == (1, 1)
    finished = (
        DATA
        + f"11 12:00:00.000002 fdatasync(9<{WAL}> <unfinished ...>\n"
        + "11 12:00:00.000003 <... fdatasync resumed>) = 0\n"
        + REPLY
    )
    assert check(finished) == (1, 0)
    failed = DATA + f"11 12:00:00.000002 fdatasync(9<{WAL}>) = -1 EIO (Input/output error)\n"
    assert check(failed + REPLY) == (1, 1)


def test_sync_of_another_file_does_not_count() -> None:
    """Only the spool's durable files count (not the directory, not another file)."""
    other = "11 12:00:00.000002 fdatasync(9</var/log/other.log>) = 0\n"
    assert check(DATA + other + REPLY) == (1, 1)
