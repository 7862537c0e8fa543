"""Tests for `relay queue ...` (`relay.queue_cli`) against `MemorySpool`, a backend that offers
only stats and redrive (as the SQS one will), and through `relay.main` for parsing and exits."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from relay import cli, main, queue_cli
from ses_core.errors import SpoolUnavailable
from ses_core.queue import (
    MemorySpool,
    NewMessage,
    QueuedEnvelope,
    RecipientState,
    SpooledRecipient,
    SpoolStats,
)

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def put(spool: MemorySpool, sender: str, *recipients: str, age: float = 0.0) -> str:
    envelope = QueuedEnvelope(sender, recipients, received_at=NOW - age, size=123)
    return asyncio.run(spool.put(NewMessage(envelope, b"Subject: x\r\n\r\nbody\r\n")))


def dead(spool: MemorySpool, message_id: str, reason: str = "no bounce sender") -> None:
    async def lease_and_bury() -> None:
        for leased in await spool.lease(100, NOW + 10**6):
            if leased.id == message_id:
                failed = leased.envelope.with_recipients(
                    SpooledRecipient(r.address, RecipientState.FAILED, 1, 550, "no such user")
                    for r in leased.envelope.recipients
                )
                await spool.dead_letter(leased, failed, reason)
            else:
                await spool.release(leased)

    asyncio.run(lease_and_bury())


def deferred(spool: MemorySpool, message_id: str) -> None:
    async def attempt() -> None:
        for leased in await spool.lease(100, NOW + 10**6):
            if leased.id != message_id:
                await spool.release(leased)
                continue
            first, *rest = leased.envelope.recipients
            envelope = leased.envelope.with_recipients(
                [
                    SpooledRecipient(first.address, RecipientState.ACCEPTED, 1, 250, "Ok"),
                    *(
                        SpooledRecipient(r.address, attempts=1, code=454, text="Throttling")
                        for r in rest
                    ),
                ]
            )
            await spool.settle(
                leased, envelope, next_attempt_at=NOW + 300, last_error="454 Throttling"
            )

    asyncio.run(attempt())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def spool(clock: Clock) -> MemorySpool:
    spool = MemorySpool(clock=clock)
    put(spool, "old@shop.example", "a@example.com", age=7200)  # m00000001
    put(spool, "news@Letters.example", "b@example.com", "c@example.com", age=600)
    put(spool, "", "d@example.com", age=10)
    return spool


def run(backend: Any, *argv: str, clock: Clock | None = None) -> tuple[int, str, str]:
    """Parse `queue argv` as `relay` does and run it on `backend`: (status, stdout, stderr)."""
    args = cli.parse(["queue", *argv])
    out, err = io.StringIO(), io.StringIO()
    status = queue_cli.run(
        args, {}, factory=lambda: backend, out=out, err=err, clock=clock or Clock()
    )
    return status, out.getvalue(), err.getvalue()


def test_list_prints_a_table_oldest_first(spool: MemorySpool) -> None:
    """`list` prints a header, one row per message oldest first, and a count."""
    status, out, err = run(spool, "list")
    lines = out.splitlines()
    assert (status, err) == (0, "")
    assert lines[0].split()[:4] == ["ID", "STATE", "AGE", "SIZE"]
    assert [line.split()[0] for line in lines[1:4]] == ["m00000001", "m00000002", "m00000003"]
    assert lines[1].split()[1:7] == ["queued", "2h00m", "123", "0", "now", "1/1"]
    assert "<>" in lines[3] and lines[-1] == "3 messages"
    _, out, _ = run(spool, "list", "--limit", "2")
    assert out.splitlines()[-1] == "2 messages (the limit: --limit N shows more)"


def test_list_json_gives_every_field_one_object_per_line(spool: MemorySpool) -> None:
    """`list --json` is one JSON object per line with the envelope and recipients."""
    deferred(spool, "m00000002")
    status, out, _ = run(spool, "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and len(rows) == 3
    second = rows[1]
    assert second["id"] == "m00000002" and second["state"] == "queued"
    assert second["sender"] == "news@Letters.example" and second["age_seconds"] == 600
    assert second["attempts"] == 1 and second["last_error"] == "454 Throttling"
    assert second["pending_recipients"] == 1
    assert second["recipients"][0] == {
        "address": "b@example.com",
        "state": "accepted",
        "attempts": 1,
        "code": 250,
        "text": "Ok",
        "ambiguous_resends": 0,
    }


@pytest.mark.parametrize(
    ("options", "ids"),
    [
        (["--older-than", "1h"], ["m00000001"]),
        (["--older-than", "5m"], ["m00000001", "m00000002"]),
        (["--sender-domain", "letters.EXAMPLE"], ["m00000002"]),
        (["--sender-domain", "@shop.example"], ["m00000001"]),
        (["--state", "dead"], ["m00000003"]),
        (["--state", "queued"], ["m00000001", "m00000002"]),
        (["--limit", "1"], ["m00000001"]),
    ],
)
def test_list_filters(spool: MemorySpool, options: list[str], ids: list[str]) -> None:
    """Age, sender domain (case-insensitive, `@` optional), state and limit filter the list."""
    dead(spool, "m00000003")
    status, out, _ = run(spool, "list", "--json", *options)
    assert status == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids


def test_show_prints_envelope_recipients_and_attempts(spool: MemorySpool) -> None:
    """`show ID` prints the envelope, each recipient's state and last reply, and the schedule."""
    deferred(spool, "m00000002")
    status, out, _ = run(spool, "show", "m00000002")
    assert status == 0
    assert "sender:        news@Letters.example" in out
    assert "attempts:      1" in out
    assert "(in 5m)" in out and "last error:    454 Throttling" in out
    assert "recipients:    1 pending of 2" in out
    assert "b@example.com  accepted, 1 attempt(s), last reply: 250 Ok" in out
    assert "c@example.com  pending, 1 attempt(s), last reply: 454 Throttling" in out


def test_show_dead_letter_and_json(spool: MemorySpool) -> None:
    """A dead letter shows when it was set aside and why; `--json` gives the same fields."""
    dead(spool, "m00000001", "no bounce sender")
    _, out, _ = run(spool, "show", "m00000001")
    assert "state:         dead" in out and "dead-lettered:" in out
    assert "last error:    no bounce sender" in out
    status, out, _ = run(spool, "show", "m00000001", "--json")
    assert status == 0 and json.loads(out)["recipients"][0]["state"] == "failed"


def test_show_unknown_id_is_exit_1_and_one_line(spool: MemorySpool) -> None:
    """An unknown ID exits 1 with one line on stderr."""
    assert run(spool, "show", "nope") == (1, "", "queue show: no message nope\n")


def test_retry_makes_a_deferred_message_due_now(spool: MemorySpool, clock: Clock) -> None:
    """`retry ID` makes it due at once; an unknown ID among them is reported and exits 1."""
    deferred(spool, "m00000002")
    clock.now = NOW + 5
    status, out, err = run(spool, "retry", "m00000002", "missing", clock=clock)
    assert status == 1
    assert out == "m00000002: due now\n" and err == "missing: no such queued message\n"
    shown = spool.show("m00000002")
    assert shown is not None and shown.next_attempt_at == NOW + 5


def test_retry_all_flushes_every_queued_message(spool: MemorySpool, clock: Clock) -> None:
    """`retry --all` makes every queued message due now (dead letters stay dead)."""
    deferred(spool, "m00000002")
    dead(spool, "m00000001")
    status, out, _ = run(spool, "retry", "--all", clock=clock)
    assert status == 0 and out.splitlines()[-1] == "2 message(s) due now"
    assert all(m.next_attempt_at <= NOW for m in spool.list(queue_cli.QueueFilter()))


@pytest.mark.parametrize("argv", [["retry"], ["retry", "--all", "m00000001"]])
def test_retry_needs_ids_or_all(spool: MemorySpool, argv: list[str]) -> None:
    """`retry` with neither IDs nor --all (or both) is a usage error."""
    status, _, err = run(spool, *argv)
    assert status == 2 and err == "queue retry: give message IDs or --all (not both)\n"


def test_delete_removes_queued_and_dead_messages(spool: MemorySpool) -> None:
    """`delete` removes messages for good; a second delete finds nothing."""
    dead(spool, "m00000003")
    assert run(spool, "delete", "m00000001", "m00000003") == (
        0,
        "m00000001: deleted\nm00000003: deleted\n",
        "",
    )
    assert run(spool, "delete", "m00000001") == (1, "", "m00000001: no such message\n")
    assert [m.id for m in spool.list(queue_cli.QueueFilter())] == ["m00000002"]


def test_requeue_moves_a_dead_letter_back(spool: MemorySpool) -> None:
    """`requeue` puts a dead letter back with its recipients pending; a queued one is refused."""
    dead(spool, "m00000001")
    assert run(spool, "requeue", "m00000001")[:2] == (0, "m00000001: requeued\n")
    shown = spool.show("m00000001")
    assert shown is not None and shown.state.value == "queued"
    assert [r.state for r in shown.envelope.recipients] == [RecipientState.PENDING]
    assert run(spool, "requeue", "m00000002") == (1, "", "m00000002: no such dead letter\n")


def test_redrive_requeues_dead_letters_up_to_the_limit(spool: MemorySpool) -> None:
    """`redrive` requeues every dead letter, or at most --limit of them."""
    for message_id in ("m00000001", "m00000002", "m00000003"):
        dead(spool, message_id)
    assert run(spool, "redrive", "--limit", "2")[:2] == (0, "2 dead letter(s) requeued\n")
    assert spool.summary().dead_letters == 1
    assert run(spool, "redrive")[:2] == (0, "1 dead letter(s) requeued\n")
    assert run(spool, "redrive")[:2] == (0, "0 dead letter(s) requeued\n")


def test_stats_human_and_json(spool: MemorySpool) -> None:
    """`stats` prints messages, pending recipients, oldest age, dead letters and free bytes."""
    dead(spool, "m00000003")
    status, out, _ = run(spool, "stats")
    assert status == 0
    assert out.splitlines()[:4] == [
        "messages:           2",
        "pending recipients: 3",
        "oldest age:         2h00m (received 2027-01-15T06:00:00Z)",
        "dead letters:       1",
    ]
    assert out.splitlines()[4] == "free bytes:         - (not local)"
    _, out, _ = run(spool, "stats", "--json")
    assert json.loads(out) == {
        "messages": 2,
        "pending_recipients": 3,
        "oldest_received_at": NOW - 7200,
        "oldest_age_seconds": 7200,
        "dead_letters": 1,
        "free_bytes": None,
    }


class StatsAndRedriveOnly:
    """A backend like the SQS one: queue depth and a dead-letter redrive, nothing per message."""

    def __init__(self) -> None:
        self.redriven: list[int] = []

    def summary(self) -> SpoolStats:
        return SpoolStats(5, 7, None, 2, free_bytes=3 * 2**30)

    def redrive(self, limit: int) -> int:
        self.redriven.append(limit)
        return 2


def test_a_stats_only_backend_offers_stats_and_redrive() -> None:
    """A backend that is not a SpoolAdmin answers stats and redrive, and exit 2 for the rest."""
    backend = StatsAndRedriveOnly()
    status, out, _ = run(backend, "stats")
    assert status == 0 and "free bytes:         3.0 GiB (3221225472)" in out
    assert run(backend, "redrive", "--limit", "10")[:2] == (0, "2 dead letter(s) requeued\n")
    assert backend.redriven == [10]
    assert run(backend, "list") == (
        2,
        "",
        "queue list: this spool backend does not offer list (it offers: stats, redrive)\n",
    )


def test_spool_errors_are_one_line_and_exit_1() -> None:
    """A spool that fails (I/O, unavailable) is one line naming the error, never a traceback."""

    def broken() -> Any:
        raise SpoolUnavailable("disk I/O error")

    args = cli.parse(["queue", "stats"])
    err = io.StringIO()
    assert queue_cli.run(args, {}, factory=broken, out=io.StringIO(), err=err) == 1
    assert err.getvalue() == "queue stats: spool error: SpoolUnavailable: disk I/O error\n"


def test_backend_is_closed_after_the_command(spool: MemorySpool) -> None:
    """The backend's `close()` runs when the command ends, even when it failed."""
    closed: list[bool] = []
    spool.close = lambda: closed.append(True)  # type: ignore[attr-defined]
    run(spool, "show", "nope")
    assert closed == [True]


def test_missing_spool_directory_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spool directory that does not exist is reported (not created) with exit 1."""
    missing = tmp_path / "nowhere"
    assert main.main(["queue", "stats", "--spool-dir", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"queue stats: no spool directory at {missing} (set RELAY_SPOOL_DIR or pass --spool-dir)\n"
    )
    assert not missing.exists()


def test_spool_directory_comes_from_the_environment(tmp_path: Path) -> None:
    """RELAY_SPOOL_DIR names the directory; --spool-dir wins over it; ./spool by default."""
    opened: list[Path] = []
    queue_cli.OPENERS["test"] = lambda directory, _environ: opened.append(directory)
    try:
        env = {"RELAY_SPOOL": "test", "RELAY_SPOOL_DIR": str(tmp_path)}
        queue_cli.backend_factory(cli.parse(["queue", "stats"]), env)()
        other = cli.parse(["queue", "stats", "--spool-dir", "/elsewhere"])
        queue_cli.backend_factory(other, env)()
        queue_cli.backend_factory(cli.parse(["queue", "stats"]), {"RELAY_SPOOL": "test"})()
    finally:
        del queue_cli.OPENERS["test"]
    assert opened == [tmp_path, Path("/elsewhere"), Path("spool")]


def test_a_spool_kind_without_an_opener_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """RELAY_SPOOL naming a backend the command cannot open is a usage error, one line."""
    args = cli.parse(["queue", "stats"])
    assert queue_cli.run(args, {"RELAY_SPOOL": "carrier-pigeon"}) == 2
    assert capsys.readouterr().err == (
        "queue stats: RELAY_SPOOL=carrier-pigeon: not supported by this command "
        "(supported: local, sqs)\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["queue"],
        ["queue", "list", "--older-than", "soon"],
        ["queue", "list", "--limit", "0"],
        ["queue", "list", "--state", "lost"],
        ["queue", "delete"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A missing action or ID, or a bad option value, is argparse's usage error (exit 2)."""
    with pytest.raises(SystemExit) as stopped:
        main.main(argv)
    assert stopped.value.code == 2
    assert "usage: relay queue" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("45s", 45), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5H", 5400)],
)
def test_parse_age(text: str, seconds: float) -> None:
    """Ages are plain seconds or a number with s, m, h or d."""
    assert queue_cli.parse_age(text) == seconds


def test_parse_age_refuses_other_text() -> None:
    """Anything else is an argparse type error naming the accepted forms."""
    with pytest.raises(argparse.ArgumentTypeError, match="use e.g. 90, 45s, 30m, 2h, 1d"):
        queue_cli.parse_age("-3m")
