"""SqliteBlacklist on real files: schema, persistence, concurrent readers and writers, failures."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ses_core.blacklist import BlacklistEvent, BlacklistReason, InstantLookup
from ses_core.blacklist._sqlite_schema import SCHEMA_VERSION
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.errors import BlacklistUnavailable, LookupWouldBlock

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def event(address: str = "bob@example.com", feedback_id: str | None = "fb-1") -> BlacklistEvent:
    return BlacklistEvent(
        address=address,
        reason=BlacklistReason.BOUNCE,
        detail="Permanent/General",
        feedback_id=feedback_id,
        message_id="msg-1",
        timestamp=T0,
    )


def test_creates_schema_in_wal_mode(tmp_path: Path) -> None:
    """A new file gets both tables, the schema version and WAL journaling."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path):
        pass
    with sqlite3.connect(path) as raw:
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
        assert {"blacklist", "blacklist_feedback"} <= tables
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_entries_and_idempotency_survive_reopening(tmp_path: Path) -> None:
    """Entries and remembered feedback ids persist in the file."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path) as first:
        entry = first.record(event())
    with SqliteBlacklist(str(path)) as second:
        assert second.get("bob@example.com") == entry
        assert second.record(event()) == entry


def test_lookup_many_handles_more_keys_than_one_statement(tmp_path: Path) -> None:
    """Lookups larger than one IN (...) chunk still find every entry."""
    with SqliteBlacklist(tmp_path / "bl.db") as store:
        store.record(event("user1234@example.com"))
        store.record(event("user1@example.com", "fb-2"))
        found = store.lookup_many(f"user{n}@example.com" for n in range(1500))
    assert set(found) == {"user1234@example.com", "user1@example.com"}


def test_readers_in_threads_while_one_writes(tmp_path: Path) -> None:
    """Reader threads never fail or see a torn entry while a writer records events."""
    store = SqliteBlacklist(tmp_path / "bl.db")
    errors: list[BaseException] = []
    done = threading.Event()
    reads = [0]

    def reader() -> None:
        try:
            for _ in range(2000):  # bounded; usually stopped earlier by `done`
                for entry in store.lookup_many(["bob@example.com", "ann@example.com"]).values():
                    assert entry.count >= 1 and entry.first_seen <= entry.last_seen
                reads[0] += 1
                if done.is_set():
                    return
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for n in range(100):
        store.record(event("bob@example.com" if n % 2 else "ann@example.com", f"fb-{n}"))
    done.set()
    for thread in threads:
        thread.join(timeout=30)
    store.close()
    assert errors == []
    assert reads[0] > 0
    assert not any(thread.is_alive() for thread in threads)


_WRITER = """
import sys
from datetime import UTC, datetime
from ses_core.blacklist import BlacklistEvent
from ses_core.blacklist.sqlite import SqliteBlacklist
with SqliteBlacklist(sys.argv[1]) as store:
    for n in range(int(sys.argv[2])):
        store.record(BlacklistEvent("bob@example.com", "bounce", None, f"fb-{n % 150}", None,
                                    datetime(2026, 3, 1, tzinfo=UTC)))
"""


def test_two_writer_processes_and_a_reader(tmp_path: Path) -> None:
    """Two processes writing overlapping events and this one reading agree on the result."""
    path = tmp_path / "bl.db"
    SqliteBlacklist(path).close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "150"], env=env)
        for _ in range(2)
    ]
    with SqliteBlacklist(path) as reader:
        counts = []
        for _ in range(500):  # bounded polling while the writers run
            entry = reader.get("bob@example.com")
            counts.append(0 if entry is None else entry.count)
            if all(w.poll() is not None for w in writers):
                break
        for writer in writers:
            assert writer.wait(timeout=60) == 0
        final = reader.get("bob@example.com")
    # 150 distinct feedback ids, each written twice (once per process): idempotent.
    assert final is not None and final.count == 150
    assert counts == sorted(counts)


def test_reads_continue_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """WAL: a held write transaction blocks writers (until the busy timeout), never readers."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path, busy_timeout=0.05) as store:
        store.record(event())
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            assert store.get("bob@example.com") is not None
            with pytest.raises(BlacklistUnavailable, match="locked"):
                store.record(event("ann@example.com"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.record(event("ann@example.com")).count == 1


def test_lookup_now_answers_like_lookup_many_on_its_own_connection(tmp_path: Path) -> None:
    """The instant read sees the same entries, also while another process holds the write lock
    (WAL readers are not locked out), and is an `InstantLookup`."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path, busy_timeout=0.05) as store:
        assert isinstance(store, InstantLookup)
        store.record(event())
        addresses = ["Bob@Example.com", "ann@example.com"]
        assert store.lookup_now(addresses) == store.lookup_many(addresses)
        assert store.lookup_now([]) == {}
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            assert list(store.lookup_now(addresses)) == ["bob@example.com"]
        finally:
            other.execute("ROLLBACK")
            other.close()


def _real_busy_error(tmp_path: Path) -> sqlite3.OperationalError:
    """The error SQLite itself raises for a locked database (rollback journal, exclusive lock,
    busy timeout 0): what the instant connection sees when a reader would have to wait."""
    path = tmp_path / "journal.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    reader = sqlite3.connect(path, timeout=0)
    try:
        reader.execute("SELECT * FROM t").fetchall()
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        reader.close()
        holder.execute("ROLLBACK")
        holder.close()
    raise AssertionError("the exclusive lock did not block the reader")


def test_lookup_now_would_block_on_a_locked_database_and_fails_on_other_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLITE_BUSY becomes LookupWouldBlock (ask again from a thread); any other SQLite error
    is BlacklistUnavailable, never "not blacklisted"."""
    busy = _real_busy_error(tmp_path)
    with SqliteBlacklist(tmp_path / "bl.db") as store:

        def locked(connection: sqlite3.Connection, keys: list[str]) -> None:
            raise busy

        monkeypatch.setattr(SqliteBlacklist, "_select_many", staticmethod(locked))
        with pytest.raises(LookupWouldBlock):
            store.lookup_now(["bob@example.com"])
        store.close()
        with pytest.raises(BlacklistUnavailable):
            store.lookup_now(["bob@example.com"])


def test_missing_directory_is_unavailable(tmp_path: Path) -> None:
    """A path in a directory that does not exist fails at construction, typed."""
    with pytest.raises(BlacklistUnavailable, match="open"):
        SqliteBlacklist(tmp_path / "missing" / "bl.db")


def test_file_that_is_not_a_database_is_unavailable(tmp_path: Path) -> None:
    """A file with other content is BlacklistUnavailable, not a crash."""
    path = tmp_path / "bl.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BlacklistUnavailable):
        SqliteBlacklist(path)


def test_unknown_schema_version_is_unavailable(tmp_path: Path) -> None:
    """A file from a newer, incompatible version is refused."""
    path = tmp_path / "bl.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    with pytest.raises(BlacklistUnavailable, match="schema version 99"):
        SqliteBlacklist(path)


def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    """Using a closed store raises BlacklistUnavailable in every thread."""
    store = SqliteBlacklist(tmp_path / "bl.db")
    store.close()
    with pytest.raises(BlacklistUnavailable, match="closed"):
        store.get("bob@example.com")
    with pytest.raises(BlacklistUnavailable, match="closed"):
        store.record(event())


def test_failed_write_rolls_back(tmp_path: Path) -> None:
    """A write that fails halfway leaves nothing behind (the transaction is rolled back)."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path) as store:
        raw = sqlite3.connect(path)
        raw.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON blacklist BEGIN SELECT RAISE(FAIL, 'no'); END"
        )
        raw.commit()
        raw.close()
        with pytest.raises(BlacklistUnavailable, match="record failed"):
            store.record(event())
        assert store.get("bob@example.com") is None
        with sqlite3.connect(path) as check:
            assert check.execute("SELECT COUNT(*) FROM blacklist_feedback").fetchone()[0] == 0
        check.close()


def test_memory_path_is_refused() -> None:
    """:memory: would give each thread its own database, so it is refused."""
    with pytest.raises(ValueError, match="InMemoryBlacklist"):
        SqliteBlacklist(":memory:")


def test_many_events_keep_exact_idempotency(tmp_path: Path) -> None:
    """Every feedback id ever recorded is remembered, however many there are."""
    with SqliteBlacklist(tmp_path / "bl.db") as store:
        for n in range(60):
            entry = store.record(
                BlacklistEvent(
                    "bob@example.com", "bounce", None, f"fb-{n}", None, T0 + timedelta(n)
                )
            )
        assert store.record(event(feedback_id="fb-0")) == entry
        assert entry.count == 60


def test_reads_fail_as_unavailable_once_closed(tmp_path: Path) -> None:
    """A usable file answers; once closed, every read raises BlacklistUnavailable."""
    store = SqliteBlacklist(tmp_path / "bl.db")
    assert store.lookup_many(["bob@example.com"]) == {}
    store.close()
    with pytest.raises(BlacklistUnavailable):
        store.lookup_many(["bob@example.com"])
    with pytest.raises(BlacklistUnavailable):
        store.list_page()


# Schema version 1 exactly as released (blacklist and feedback ids, no pending tables).
V1_SCHEMA = """
CREATE TABLE blacklist (
    address     TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    detail      TEXT,
    feedback_id TEXT,
    message_id  TEXT,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    count       INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE blacklist_feedback (
    address     TEXT NOT NULL,
    feedback_id TEXT NOT NULL,
    PRIMARY KEY (address, feedback_id)
) WITHOUT ROWID;
INSERT INTO blacklist VALUES ('bob@example.com', 'bounce', 'Permanent/General', 'fb-1', 'msg-1',
    '2026-03-01T12:00:00.000000+00:00', '2026-03-01T12:00:00.000000+00:00', 1);
INSERT INTO blacklist_feedback VALUES ('bob@example.com', 'fb-1');
PRAGMA user_version = 1;
"""


def soft(feedback_id: str, address: str = "ooto@example.com") -> BlacklistEvent:
    return BlacklistEvent(address, "bounce", "Transient/General", feedback_id, None, T0)


def test_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A v1 file gains the pending tables and version 2; its entries and ids are kept."""
    path = tmp_path / "bl.db"
    raw = sqlite3.connect(path)
    raw.executescript(V1_SCHEMA)
    raw.close()
    assert SCHEMA_VERSION == 2
    with SqliteBlacklist(path) as store:
        entry = store.get("bob@example.com")
        assert entry is not None and entry.count == 1
        assert store.record(event()) == entry
        assert store.record_occurrence(soft("soft-1"), threshold=2).entry is None
        assert store.record_occurrence(soft("soft-2"), threshold=2).entry is not None
    raw = sqlite3.connect(path)
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"blacklist_pending", "blacklist_pending_feedback"} <= tables
    assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    raw.close()
    with SqliteBlacklist(path) as again:  # a migrated file opens as a current one
        assert again.get("ooto@example.com") is not None


def test_occurrence_counts_survive_reopening(tmp_path: Path) -> None:
    """Counts and their feedback ids persist in the file, separate from the entries."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path) as first:
        first.record_occurrence(soft("soft-1"), threshold=3)
    with SqliteBlacklist(path) as second:
        assert second.record_occurrence(soft("soft-1"), threshold=3).duplicate
        assert second.record_occurrence(soft("soft-2"), threshold=3).count == 2
        assert second.lookup_many(["ooto@example.com"]) == {}
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM blacklist").fetchone()[0] == 0
        assert raw.execute("SELECT count FROM blacklist_pending").fetchone()[0] == 2
    raw.close()


def test_failed_threshold_write_rolls_back_the_count(tmp_path: Path) -> None:
    """If blacklisting at the threshold fails, the count is rolled back, so a retry counts it."""
    path = tmp_path / "bl.db"
    with SqliteBlacklist(path) as store:
        store.record_occurrence(soft("soft-1"), threshold=2)
        raw = sqlite3.connect(path)
        raw.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON blacklist BEGIN SELECT RAISE(FAIL, 'no'); END"
        )
        raw.commit()
        with pytest.raises(BlacklistUnavailable, match="record_occurrence failed"):
            store.record_occurrence(soft("soft-2"), threshold=2)
        raw.execute("DROP TRIGGER refuse")
        raw.commit()
        raw.close()
        result = store.record_occurrence(soft("soft-2"), threshold=2)
        assert (result.count, result.duplicate) == (2, False)
        assert result.entry is not None and store.get("ooto@example.com") == result.entry
