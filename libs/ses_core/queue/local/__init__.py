"""The local durable spool: accepted mail in one SQLite file on the relay's own disk.

On-disk layout, in the spool directory (mode 0700; every file 0600, bodies are personal data):
- `spool.sqlite3` (+ `-wal`, `-shm`): the queue. Table `messages` holds each envelope as JSON
  with its state (queued or dead), due time, attempts and last error; table `bodies` the
  message bytes with a CRC32; a one-row `spool_stats` holds the counters, kept by triggers.
- `spool.lock`: held shared by every process that has the spool open; exclusively, briefly, by
  the one that checks and recovers the file at open.
- `lease.lock`: held by the one process that delivers (leases live in its memory).
- `write.lock`: held by a process's writer for the length of one transaction (see `_writer`).
- `corrupt/<UTC time>/`: damaged spool files set aside at open, for an operator to salvage.

Why SQLite rather than a hand-written log: its WAL gives atomic multi-row transactions (a
delivery outcome and the DSN it causes are stored together or not at all), crash recovery that
is tested far beyond what a custom format could be, indexes for oldest-due-first leasing without
holding the queue in memory, and concurrent readers (the `queue` command) beside the writer.

Durability, i.e. why a 250 after `put()` is safe:
1. `put` returns only after the transaction holding the message has COMMITted.
2. The database is in WAL mode: a commit appends the transaction's pages and a commit frame to
   `spool.sqlite3-wal`, and the writer fdatasyncs the WAL right after COMMIT (outside SQLite's
   write lock, so that the relay's puts never wait for another process's fsync) and before
   `put` returns. The bytes are on stable storage; the main file is brought up to date later by
   checkpoints, which fsync the WAL and then the main file before the WAL is reused.
3. The directory is fsync'd after the spool creates the database file, and SQLite's unix VFS
   syncs the directory when it creates a WAL, so the files' names are durable too.
4. After a crash or power cut SQLite replays every committed frame from the WAL at the next
   open and ignores the torn tail of a transaction that never committed - which is exactly the
   set of puts that never returned, whose clients got no 250 and still hold the message.
Group commit (one writer thread committing every write that is waiting as one transaction)
keeps this affordable: under load one fsync covers many messages (`io_stats`).

What a crash repeats: leases are in memory, so the messages being delivered at the crash come
back due at restart; at most those deliveries are repeated. Delivery outcomes (`settle`,
`dead_letter`) are answered at COMMIT and fsynced within 0.1 s (`_writer.LAZY_SYNC_SECONDS`):
a killed process loses none of them (the page cache outlives it); a power cut may also repeat
the deliveries finished in that last 0.1 s, as Postfix may after removing a delivered queue file.
What it never does: lose a message
that was answered 250, or store part of one.

Admission (`admission()`): the relay asks before taking a body; the spool refuses ("disk_full")
below `min_free_bytes` free (a statvfs reading cached for a second) and ("queue_full") at
`max_messages` queued; a write that still hits a full disk (SQLITE_FULL) raises `SpoolFull`
with nothing of its batch stored.
"""

from ses_core.queue.local._recovery import RecoveryReport
from ses_core.queue.local._spool import LocalSpool
from ses_core.queue.local._writer import SpoolIoStats

__all__ = ["LocalSpool", "RecoveryReport", "SpoolIoStats"]
