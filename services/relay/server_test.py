"""Unit tests of the SMTP session class's pure parts (the integration suites drive it whole)."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.server import _SIMPLE_PATH, RelaySMTP, _parse_path

ATOM = st.text("abcXYZ09.!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
DOMAIN = st.text("abc09-.", min_size=1, max_size=10)
PARAMS = st.sampled_from(["", " ", "  ", "\t", " SIZE=100", "  BODY=8BITMIME ", " (c) X=1", "X=1"])
NOISE = st.text('<>@. \t()"[]\\abc:,;', max_size=6)


def _getaddr(arg: str) -> tuple[str | None, str | None]:
    return RelaySMTP._getaddr(None, arg)  # type: ignore[arg-type]


@settings(max_examples=2000, deadline=None)
@given(local=ATOM, domain=DOMAIN, params=PARAMS, before=NOISE, after=NOISE)
@example(local="r1", domain="example.org", params=" SIZE=100", before="", after="")
@example(local="a..b", domain="example.org", params="", before="", after="")
@example(local="a", domain="b.", params="", before="", after="")
@example(local="a", domain="b", params=" (comment) SIZE=1", before="", after="")
@example(local="0", domain="0", params="", before='"', after='"@[')
def test_the_fast_path_parses_exactly_as_aiosmtpd(
    local: str, domain: str, params: str, before: str, after: str
) -> None:
    """Wherever the `<local@domain>` fast path applies, it gives aiosmtpd's own answer."""
    for arg in (f"<{local}@{domain}>{params}", f"{before}<{local}@{domain}>{after}{params}"):
        expected = _parse_path.__wrapped__(arg)
        assert _getaddr(arg) == expected
        if _SIMPLE_PATH.fullmatch(arg):
            assert expected[0] == f"{local}@{domain}"


def test_the_fast_path_covers_the_common_forms() -> None:
    """The forms clients send nearly always take the fast path."""
    for arg in ("<r123@example.org>", "<first.last+tag@mail.example.co.uk> SIZE=2048"):
        assert re.fullmatch(_SIMPLE_PATH, arg)
    for arg in ('<"quoted local"@example.org>', "<a@[127.0.0.1]>", "a@example.org", "<>"):
        assert not _SIMPLE_PATH.fullmatch(arg)
        assert _getaddr(arg) == _parse_path.__wrapped__(arg)


def test_paths_that_break_the_email_parser_are_syntax_errors() -> None:
    """Malformed paths on which Python's header parser fails with an internal error (not
    HeaderParseError) read as "no address" (a 501), never as an exception (a 451)."""
    for arg in ('"<0@0>"@[', '"<0@0>"@[ ', "a@"):
        assert _getaddr(arg) == (None, None)
