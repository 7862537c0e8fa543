"""MAIL FROM / RCPT TO paths: aiosmtpd's parser, made cheap, total and run once per command.

aiosmtpd parses every path with Python's email header parser, which is slow, and the relay must
also look at a RCPT path itself (to answer 501 with a reason). So:

- `parse_path` answers the common `<local@domain>` form with one regular expression, held to the
  header parser's answers by a property test, and caches the rest: senders repeat, and
  newsletters send nothing but new recipients. Only ordinary-length paths are cached (RFC 5321
  paths are at most 256 octets), so a client sending huge unique paths cannot pin memory.
- `PathParser` remembers a session's last answer, so the relay's RCPT check and aiosmtpd's own
  parse of the same path share one parse.
"""

from __future__ import annotations

import functools
import re

from relay._aiosmtpd import ParsedPath, aiosmtpd_parse_path
from ses_core.addresses import EmailAddress
from ses_core.errors import InvalidAddress

#: Longest path argument that is cached.
_CACHED_PATH_LENGTH = 300
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
#: `<dot-atom@dot-atom>`, with optional parameters after white space: what nearly every client
#: sends. Anything else (quoted local parts, comments, domain literals, UTF-8, no brackets) goes
#: to aiosmtpd's parser.
SIMPLE_PATH = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?:[ \t]+(?![ \t(])(.*))?",
    re.ASCII | re.DOTALL,
)


def parse_path(arg: str) -> ParsedPath:
    """(address, parameters) of a MAIL/RCPT argument, exactly as aiosmtpd would parse it;
    (None, None) when it is malformed."""
    if len(arg) > _CACHED_PATH_LENGTH:
        return aiosmtpd_parse_path(arg)
    simple = SIMPLE_PATH.fullmatch(arg)
    if simple is not None:
        return simple.group(1), simple.group(2) or ""
    return _cached_parse(arg)


@functools.lru_cache(maxsize=16384)
def _cached_parse(arg: str) -> ParsedPath:
    return aiosmtpd_parse_path(arg)


class PathParser:
    """`parse_path` for one session, remembering its last answer."""

    __slots__ = ("_last_arg", "_last")

    def __init__(self) -> None:
        self._last_arg: str | None = None
        self._last: ParsedPath = (None, None)

    def __call__(self, arg: str) -> ParsedPath:
        if arg != self._last_arg:
            self._last = parse_path(arg)
            self._last_arg = arg
        return self._last


def strip_keyword(keyword: str, arg: str) -> str | None:
    """The path after `TO:`/`FROM:` (any case), or None when the keyword is missing."""
    if arg[: len(keyword)].upper() == keyword:
        return arg[len(keyword) :].strip()
    return None


def path_problem(path: str) -> str:
    """Why a path that did not parse is not an address: one line for a 501 reply."""
    try:
        EmailAddress.parse(path.split(" ", 1)[0])
    except InvalidAddress as exc:
        flat = " ".join(str(exc).split())
        return flat[:200]
    return "malformed address"
