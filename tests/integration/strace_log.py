"""Reading an `strace -f -tt -yy` log in event order, for the fsync-before-250 test.

strace writes one line per system call when it returns, unless another traced thread's event
comes in between: then it writes `<unfinished ...>` at entry and `<... NAME resumed>` at exit.
So the position of a line in the log orders events: a complete line is both the entry and the
exit of its call (nothing happened in between), a split call enters at its `unfinished` line and
returns at its `resumed` line. This module turns the log into `Call`s with those two positions;
`-yy` makes every descriptor show what it is (`5</spool/spool.sqlite3-wal>`,
`7<TCP:[127.0.0.1:2525->127.0.0.1:40000]>`), so no descriptor table has to be tracked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs

#: `1234 12:00:00.123456 write(7<TCP:[...]>, "250 ..."..., 32) = 32`
_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<time>\d\d:\d\d:\d\d\.\d+)\s+(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<args>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<args>.*)$")
_RESULT = re.compile(r"\)\s+=\s+(?P<result>-?\d+|\?)(?:\s+[A-Z]+\s+\([^)]*\))?\s*$")
_FD = re.compile(r"^(?P<fd>\d+)<(?P<what>(?:TCP|UDP|UNIX)v?6?:\[[^\]]*\]|[^>]*)>")


@attrs.frozen
class Call:
    """One system call of the traced process tree.

    Attributes:
        pid: the thread that made it.
        name: the call (`write`, `fdatasync`, ...).
        target: what its first argument's descriptor is (a path, or `TCP:[local->peer]`); "".
        text: the call's arguments as strace printed them (strings cut at `-s`).
        result: its return value, None when unknown.
        entered: position in the log at which it entered.
        returned: position in the log at which it returned.
    """

    pid: int
    name: str
    target: str
    text: str
    result: int | None
    entered: int
    returned: int


def _target(args: str) -> str:
    match = _FD.match(args.strip())
    return match["what"] if match else ""


def _result(text: str) -> int | None:
    match = _RESULT.search(text)
    if match is None or match["result"] == "?":
        return None
    return int(match["result"])


def parse(lines: Iterable[str]) -> list[Call]:
    """The calls of a `strace -f -tt -yy -o FILE` log, in the order they returned."""
    pending: dict[tuple[int, str], tuple[str, int]] = {}
    calls: list[Call] = []
    for position, line in enumerate(lines):
        match = _LINE.match(line.rstrip("\n"))
        if match is None:
            continue
        pid, rest = int(match["pid"]), match["rest"]
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            name = resumed["name"]
            start = pending.pop((pid, name), None)
            if start is None:
                continue
            args, entered = start
            text = args + resumed["args"]
            calls.append(
                Call(pid, name, _target(args), text, _result(resumed["args"]), entered, position)
            )
            continue
        call = _CALL.match(rest)
        if call is None:  # signals, exits: `--- SIGTERM ...`, `+++ exited with 0 +++`
            continue
        name, args = call["name"], call["args"]
        if args.endswith("<unfinished ...>"):
            pending[(pid, name)] = (args.removesuffix("<unfinished ...>"), position)
            continue
        calls.append(Call(pid, name, _target(args), args, _result(args), position, position))
    return calls


def socket_key(target: str) -> str:
    """A TCP socket's `local->peer` addresses, the same for every descriptor of the socket."""
    return target.removeprefix("TCP:").strip("[]")


READS = frozenset({"read", "readv", "recvfrom", "recvmsg"})
WRITES = frozenset({"write", "writev", "sendto", "sendmsg"})
SYNCS = frozenset({"fsync", "fdatasync"})


def unsynced_replies(
    calls: list[Call], *, reply: str, listen_port: int, durable_files: frozenset[str]
) -> tuple[list[Call], list[Call]]:
    """(every write of `reply` to a client of `listen_port`, those among them not preceded by
    a successful fsync/fdatasync of one of `durable_files` that entered after the client's last
    read on that connection and returned before the write entered)."""
    syncs = [c for c in calls if c.name in SYNCS and c.target in durable_files and c.result == 0]
    local = f"127.0.0.1:{listen_port}->"
    replies = [c for c in calls if c.name in WRITES and reply in c.text and local in c.target]
    unsynced = []
    for write in replies:
        key = socket_key(write.target)
        data_read = max(
            (
                c.returned
                for c in calls
                if c.name in READS
                and socket_key(c.target) == key
                and c.returned < write.entered
                and (c.result or 0) > 0
            ),
            default=-1,
        )
        if not any(data_read < s.entered and s.returned < write.entered for s in syncs):
            unsynced.append(write)
    return replies, unsynced
