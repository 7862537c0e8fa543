"""Tests for relay.paths: the fast path agrees with aiosmtpd's parser, and bad paths are 501s."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay._aiosmtpd import aiosmtpd_parse_path
from relay.paths import SIMPLE_PATH, PathParser, parse_path, path_problem, strip_keyword

ATOM = st.text("abcXYZ09.!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
DOMAIN = st.text("abc09-.", min_size=1, max_size=10)
PARAMS = st.sampled_from(["", " ", "  ", "\t", " SIZE=100", "  BODY=8BITMIME ", " (c) X=1", "X=1"])
NOISE = st.text('<>@. \t()"[]\\abc:,;', max_size=6)


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
        expected = aiosmtpd_parse_path(arg)
        assert parse_path(arg) == expected
        if SIMPLE_PATH.fullmatch(arg):
            assert expected[0] == f"{local}@{domain}"


def test_the_fast_path_covers_the_common_forms() -> None:
    """The forms clients send nearly always take the fast path; the others get aiosmtpd's."""
    for arg in ("<r123@example.org>", "<first.last+tag@mail.example.co.uk> SIZE=2048"):
        assert SIMPLE_PATH.fullmatch(arg)
    for arg in ('<"quoted local"@example.org>', "<a@[127.0.0.1]>", "a@example.org", "<>"):
        assert not SIMPLE_PATH.fullmatch(arg)
        assert parse_path(arg) == aiosmtpd_parse_path(arg)


def test_paths_that_break_the_email_parser_are_syntax_errors() -> None:
    """Malformed paths on which Python's header parser fails with an internal error (not
    HeaderParseError) read as "no address" (a 501), never as an exception (a 451)."""
    for arg in ('"<0@0>"@[', '"<0@0>"@[ ', "a@", "x" * 400 + "@["):
        assert parse_path(arg) == (None, None)


def test_a_session_parser_answers_a_repeated_path_from_its_last_parse() -> None:
    """The same argument twice in a row gives the same answer; a new one is parsed afresh."""
    parser = PathParser()
    assert parser("<a@example.org>") == ("a@example.org", "")
    assert parser("<a@example.org>") == ("a@example.org", "")
    assert parser("<b@example.org> SIZE=1") == ("b@example.org", "SIZE=1")
    assert parser("a@") == (None, None)


def test_keyword_and_problem() -> None:
    """`TO:` is stripped in any case; a bad path is explained in one line."""
    assert strip_keyword("TO:", "to: <a@example.org>") == "<a@example.org>"
    assert strip_keyword("TO:", "FROM:<a@example.org>") is None
    problem = path_problem("<a@@example.org>")
    assert problem and "\n" not in problem and len(problem) <= 200
