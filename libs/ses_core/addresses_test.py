"""Tests for ses_core.addresses: parsing, normalisation and the single error type."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ses_core.addresses import MAX_INPUT_LENGTH, EmailAddress, normalize_address
from ses_core.errors import InvalidAddress, SesCoreError

#: Every property test runs without hypothesis' per-example deadline: on a busy 2-core CI machine
#: the first examples (email-validator's imports, IDNA tables) are slow, not wrong.
NO_DEADLINE = settings(deadline=None)


@pytest.mark.parametrize(
    "text",
    ["bob@example.com", "<bob@example.com>", "  <bob@example.com>  ", "Bob <bob@example.com>"],
)
def test_envelope_and_header_forms_give_the_same_address(text: str) -> None:
    """Brackets, whitespace and display names are unwrapped to the same bare address."""
    assert EmailAddress.parse(text).address == "bob@example.com"


def test_original_text_is_kept() -> None:
    """The value remembers exactly what it was parsed from."""
    text = '"Jane Doe" <Jane@Example.com>'
    assert EmailAddress.parse(text).original == text


def test_quoted_display_name_is_unquoted() -> None:
    """A quoted display name comes back without its quotes and escapes."""
    parsed = EmailAddress.parse('"Doe, \\"JD\\" Jane" <jane@example.com>')
    assert parsed.display_name == 'Doe, "JD" Jane'


def test_key_is_case_insensitive() -> None:
    """Case variants of an address share one blacklist key."""
    assert normalize_address("Bob@Example.COM") == normalize_address("bob@example.com")
    assert normalize_address("BOB@EXAMPLE.COM") == "bob@example.com"


def test_idn_domain_key_uses_the_a_label() -> None:
    """Unicode and punycode spellings of a domain share the ASCII key."""
    unicode_form = EmailAddress.parse("jane@bücher.de")
    ascii_form = EmailAddress.parse("jane@xn--bcher-kva.de")
    assert unicode_form.key == ascii_form.key == "jane@xn--bcher-kva.de"
    assert unicode_form.domain == "bücher.de"


def test_internationalised_local_part_is_valid_and_needs_smtputf8() -> None:
    """SMTPUTF8 addresses parse, and say that they need the extension."""
    parsed = EmailAddress.parse("дима@пример.рф")
    assert parsed.requires_smtputf8
    assert parsed.key == "дима@xn--e1afmkfd.xn--p1ai"
    assert not EmailAddress.parse("a@пример.рф").requires_smtputf8


def test_source_route_is_ignored() -> None:
    """RFC 5321 source routes are accepted and dropped."""
    assert EmailAddress.parse("<@relay.example,@b.example:x@c.example>").address == "x@c.example"


def test_quoted_local_part_is_accepted() -> None:
    """Quoted local parts are valid SMTP and are kept as written."""
    assert EmailAddress.parse('<"john doe"@example.com>').key.endswith("@example.com")


def test_plus_tags_and_dots_are_kept() -> None:
    """Provider-specific local-part conventions are not second-guessed."""
    assert normalize_address("J.Doe+News@example.com") == "j.doe+news@example.com"


def test_parsed_address_is_frozen() -> None:
    """A parsed address cannot change in place: the parse cache hands one object to every caller."""
    parsed = EmailAddress.parse("bob@example.com")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        parsed.local_part = "eve"  # type: ignore[misc]
    assert parsed.key == "bob@example.com"


def test_str_is_the_bare_address() -> None:
    """str() gives what goes into MAIL FROM / RCPT TO."""
    assert str(EmailAddress.parse("Bob <bob@example.com>")) == "bob@example.com"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("<>", "empty"),
        ("bob", "no '@'"),
        ("bob@", "invalid"),
        ("@example.com", "invalid"),
        ("bob@@example.com", "invalid"),
        ("bob@example", "invalid"),
        ("<bob@example.com", "angle"),
        ("bob@example.com>", "angle"),
        ("<<bob@example.com>>", "angle"),
        ("bob smith@example.com", "invalid"),
        ("bob@exa mple.com", "invalid"),
        ("x" * (MAX_INPUT_LENGTH + 1), "at most"),
    ],
)
def test_invalid_input_raises_the_typed_error_naming_the_problem(text: str, fragment: str) -> None:
    """Each kind of bad input raises InvalidAddress with a message that says what is wrong."""
    with pytest.raises(InvalidAddress, match=fragment):
        EmailAddress.parse(text)


def test_non_text_input_is_refused_with_the_typed_error() -> None:
    """Passing bytes or None is a caller bug reported as InvalidAddress, not TypeError."""
    with pytest.raises(InvalidAddress, match="must be text"):
        EmailAddress.parse(b"bob@example.com")  # type: ignore[arg-type]


def test_invalid_address_is_also_a_value_error() -> None:
    """Callers may catch the built-in family instead of the library's."""
    with pytest.raises(ValueError):
        EmailAddress.parse("nope")


@NO_DEADLINE
@given(st.text(max_size=300))
def test_arbitrary_text_raises_nothing_but_invalid_address(text: str) -> None:
    """Any text either parses or raises InvalidAddress."""
    try:
        EmailAddress.parse(text)
    except InvalidAddress:
        pass


_ASCII_LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.+_-"
#: Letters whose upper- and lower-case forms map one to one in every context: Latin accents,
#: Turkish capital dotted I (lower-cases to i + U+0307), Cyrillic, Greek without sigma, and
#: caseless CJK and Hangul.
_ONE_TO_ONE_CASE_LETTERS = "äéñøÄÉÑØİДимаЖЯжяΑαΔδΩω日本語中文한국"
#: Letters str.upper()/str.lower() do not map one to one: ß upper-cases to SS, capital sigma
#: lower-cases to final ς at the end of a word, ŉ upper-cases to ʼN.
_LOSSY_CASE_LETTERS = "ßΣσςŉ"


def _local_parts(*characters: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Dot-atom local parts (no leading, trailing or doubled dot) drawn from `characters`."""
    return st.text(st.one_of(*characters), min_size=1, max_size=30).filter(
        lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
    )


_case_safe_local = _local_parts(
    st.sampled_from(_ASCII_LOCAL_CHARS), st.sampled_from(_ONE_TO_ONE_CASE_LETTERS)
)
_any_letter_local = _local_parts(
    st.sampled_from(_ASCII_LOCAL_CHARS),
    st.sampled_from(_ONE_TO_ONE_CASE_LETTERS + _LOSSY_CASE_LETTERS),
    st.characters(categories=["L"]),
)
_domain = st.sampled_from(
    ["example.com", "Example.ORG", "bücher.de", "XN--BCHER-KVA.de", "пример.рф"]
)


@NO_DEADLINE
@given(_any_letter_local, _domain)
def test_normalisation_is_idempotent(local: str, domain: str) -> None:
    """Parsing a key again yields the same key, whatever letters the local part holds."""
    key = normalize_address(f"{local}@{domain}")
    assert normalize_address(key) == key


@NO_DEADLINE
@given(_any_letter_local, _domain)
def test_key_depends_only_on_the_lower_case_spelling(local: str, domain: str) -> None:
    """Any spelling of an address shares the key of its str.lower() spelling (module doc)."""
    for spelling in (local, local.upper(), local.title(), local.swapcase()):
        assert normalize_address(f"{spelling}@{domain}") == normalize_address(
            f"{spelling.lower()}@{domain.lower()}"
        )


@NO_DEADLINE
@given(_case_safe_local, _domain)
def test_case_variants_share_a_key(local: str, domain: str) -> None:
    """Upper- and lower-case spellings of the same address normalise identically."""
    assert normalize_address(f"{local.upper()}@{domain.upper()}") == normalize_address(
        f"{local.lower()}@{domain.lower()}"
    )


@pytest.mark.parametrize(
    ("upper", "its_lower_case", "other_spelling"),
    [("STRASSE", "strasse", "straße"), ("ΟΔΟΣ", "οδος", "οδοσ")],
)
def test_letters_without_a_one_to_one_case_mapping_are_not_folded(
    upper: str, its_lower_case: str, other_spelling: str
) -> None:
    """Keys use str.lower(), not case folding: ß and ss, or σ and a final ς, stay distinct.

    Case folding would merge them, but it would also change keys that are already stored.
    """
    key = normalize_address(f"{upper}@example.com")
    assert key == normalize_address(f"{its_lower_case}@example.com")
    assert key != normalize_address(f"{other_spelling}@example.com")


@NO_DEADLINE
@given(st.binary(max_size=100))
def test_decoded_bytes_never_escape_the_typed_error(raw: bytes) -> None:
    """Whatever a client sends, decoded leniently, only InvalidAddress can come out."""
    try:
        EmailAddress.parse(raw.decode("utf-8", "surrogateescape"))
    except SesCoreError as exc:
        assert isinstance(exc, InvalidAddress)


_ascii_soup = st.text(
    alphabet="abcXYZ019.-_+=!#$%&'*/?^`{|}~@\"() ",
    min_size=1,
    max_size=40,
)


@NO_DEADLINE
@given(
    _ascii_soup,
    st.sampled_from(
        [
            "example.com",
            "EX-AMPLE.org",
            "a.b.c.io",
            "x.test",
            "x--y.com",
            "xn--bcher-kva.de",
            "1.2.3.4",
            "a.b1",
            "localhost",
            "-a.com",
        ]
    ),
)
def test_fast_path_agrees_with_email_validator(local: str, domain: str) -> None:
    """Whatever the plain-ASCII fast path accepts, email-validator accepts with the same parts."""
    from email_validator import EmailNotValidError, validate_email

    from ses_core.addresses import _parse_plain_ascii

    bare = f"{local}@{domain}"
    fast = _parse_plain_ascii(bare)
    if fast is None:
        return
    try:
        valid = validate_email(bare, check_deliverability=False, allow_quoted_local=True)
    except EmailNotValidError as exc:
        raise AssertionError(
            f"fast path accepted {bare!r}, email-validator refused: {exc}"
        ) from exc
    assert fast == (valid.local_part, valid.ascii_domain)


@pytest.mark.parametrize("domain", ["x.test", "a.localhost", "b.onion", "c.invalid"])
def test_special_use_domains_are_still_refused(domain: str) -> None:
    """The fast path leaves special-use domains to email-validator, which refuses them."""
    with pytest.raises(InvalidAddress):
        EmailAddress.parse(f"bob@{domain}")
