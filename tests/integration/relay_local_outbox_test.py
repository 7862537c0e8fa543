"""Local mode's outbox through the relay over a real socket: an acknowledged `.eml` is durable.

The relay runs in-process in local mode; `os.fsync` and `os.replace` are wrapped by recorders
(the real calls still happen) that log into one event list, and the test client logs the moment
it receives the DATA reply. The order proves the message and its directory entry were on disk
before the client was told 250.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import aiosmtplib
import pytest

from tests.integration.relay_support import base_config, message, relay_client
from tests.support.relay_harness import InProcessRelay


def record_disk_calls(
    monkeypatch: pytest.MonkeyPatch, events: list[str], *, fail: OSError | None = None
) -> None:
    """Log every fsync (of a file or a directory) and rename in `events`; with `fail`, every
    fsync raises it instead."""
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        if fail is not None:
            raise fail
        real_fsync(fd)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)


async def send_one(relay: InProcessRelay, events: list[str]) -> tuple[int, str]:
    """One message through the relay; the reply is logged in `events` when it arrives."""
    assert relay.server is not None
    client = await relay_client(relay.server)
    try:
        await client.ehlo()
        await client.mail("app@example.com")
        await client.rcpt("you@example.org")
        try:
            reply = await client.data(message(1))
        except aiosmtplib.SMTPResponseException as exc:
            events.append(f"reply {exc.code}")
            return exc.code, exc.message
        events.append(f"reply {reply.code}")
        return reply.code, reply.message
    finally:
        client.close()


async def test_file_and_directory_are_fsynced_before_the_250(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """file fsync → rename → directory fsync → 250, and the one .eml is there."""
    outbox = tmp_path / "outbox"
    events: list[str] = []
    relay = InProcessRelay(base_config(local_outbox=outbox))
    async with relay:
        record_disk_calls(monkeypatch, events)
        code, _ = await send_one(relay, events)
    assert code == 250
    assert events == ["fsync file", "rename", "fsync dir", "reply 250"]
    assert [p.suffix for p in outbox.iterdir()] == [".eml"]


@pytest.mark.parametrize("errno_code", [errno.EIO, errno.ENOSPC])
async def test_failed_fsync_is_451_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, errno_code: int
) -> None:
    """A failing fsync (disk error, disk full): 451 4.3.0 naming the outbox, no file left."""
    outbox = tmp_path / "outbox"
    events: list[str] = []
    relay = InProcessRelay(base_config(local_outbox=outbox))
    async with relay:
        record_disk_calls(monkeypatch, events, fail=OSError(errno_code, os.strerror(errno_code)))
        code, text = await send_one(relay, events)
    assert (code, text) == (451, "4.3.0 Local outbox write failed, try again later")
    assert events == ["fsync file", "reply 451"]
    assert list(outbox.iterdir()) == []
