"""E-mail addresses as they appear in SMTP envelopes, headers and SES notifications.

One value type, `EmailAddress`, keeps what the sender wrote (`original`) and derives the
normalised `key` under which the blacklist stores and matches an address. Syntax checking is
delegated to `email-validator` (RFC 5321/5322/6531 rules, IDNA 2008 via UTS #46), which is far
more thorough than a regular expression; this module only adds envelope/header unwrapping and the
normalisation policy.

Normalisation policy (the key):
- surrounding whitespace, angle brackets, display names and source routes are removed;
- the domain is lower-cased and converted to its IDNA A-label form (`bücher.de` and
  `xn--bcher-kva.de` give the same key), because that form is stable and ASCII;
- the local part is Unicode-NFC-normalised and lower-cased. RFC 5321 allows a case-sensitive local
  part, but no mailbox provider in practice treats `Bob@` and `bob@` as different people, and a
  blacklist that misses a case variant keeps mailing someone who bounced or complained. We prefer
  a rare false match to a repeated complaint. Lower-casing is `str.lower()`, not case folding:
  spellings that lower-case to the same text share a key (`Bob`/`BOB`, `ДИМА`/`дима`, `İ`/`i̇`),
  but letters without a one-to-one case mapping keep theirs: `STRASSE` and `straße` differ, as do
  a final `ς` and `σ`. Folding would merge them but would change keys already stored.
- dots and `+tags` in the local part are kept: their meaning is provider-specific.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import attrs
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from ses_core.errors import InvalidAddress

#: RFC 5321 4.5.3.1.3: a path (address plus brackets) is at most 256 octets. We are a bit more
#: lenient on the raw input (display names, whitespace) but refuse anything absurd up front, so
#: that megabyte "addresses" cost nothing.
MAX_INPUT_LENGTH = 1024


@attrs.frozen
class EmailAddress:
    """A syntactically valid e-mail address.

    Attributes:
        original: the text it was parsed from, unchanged.
        local_part: the part before the last `@`, as written (quotes kept for quoted forms).
        domain: the domain in Unicode form (NFC), as email-validator normalises it.
        ascii_domain: the domain in IDNA A-label form, lower-cased.
        display_name: the header display name, if the text had one.
    """

    original: str
    local_part: str
    domain: str
    ascii_domain: str
    display_name: str | None = None

    @classmethod
    def parse(cls, text: str) -> EmailAddress:
        """Parse an SMTP path (`<a@b>`, `a@b`) or a header mailbox (`"Name" <a@b>`).

        Raises `InvalidAddress` naming the problem; nothing else escapes.
        """
        if not isinstance(text, str):
            message = f"an address must be text, not {type(text).__name__}"
            raise InvalidAddress(message)
        return _parse_cached(text)

    @property
    def address(self) -> str:
        """The bare address `local@domain`, as it goes into `MAIL FROM`/`RCPT TO`."""
        return f"{self.local_part}@{self.domain}"

    @property
    def key(self) -> str:
        """The normalised form used to store and match blacklist entries (see module doc)."""
        local = unicodedata.normalize("NFC", self.local_part).lower()
        return f"{local}@{self.ascii_domain}"

    @property
    def requires_smtputf8(self) -> bool:
        """Whether sending to or from this address needs the SMTPUTF8 extension."""
        return not self.local_part.isascii()

    def __str__(self) -> str:
        return self.address


def normalize_address(text: str) -> str:
    """Shorthand for `EmailAddress.parse(text).key`."""
    return EmailAddress.parse(text).key


@functools.lru_cache(maxsize=65536)
def _parse_cached(text: str) -> EmailAddress:
    # Parsing is pure and addresses repeat heavily (hot recipients, notification re-deliveries),
    # so a bounded cache makes the common case a dict lookup. Failures are not cached.
    if len(text) > MAX_INPUT_LENGTH:
        message = f"address is {len(text)} characters long; at most {MAX_INPUT_LENGTH} accepted"
        raise InvalidAddress(message)
    display_name, bare = _unwrap(text.strip())
    if not bare:
        raise InvalidAddress("empty address")
    if "@" not in bare:
        message = f"no '@' in address {bare!r}"
        raise InvalidAddress(message)
    fast = _parse_plain_ascii(bare)
    if fast is not None:
        local_part, domain = fast
        return EmailAddress(
            original=text,
            local_part=local_part,
            domain=domain,
            ascii_domain=domain,
            display_name=display_name,
        )
    try:
        valid = validate_email(
            bare,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
        )
    except EmailNotValidError as exc:
        message = f"invalid address {bare!r}: {exc}"
        raise InvalidAddress(message) from None
    except (UnicodeError, ValueError) as exc:  # defensive: idna edge cases surface as these
        message = f"invalid address {bare!r}: {exc}"
        raise InvalidAddress(message) from None
    return EmailAddress(
        original=text,
        local_part=valid.local_part,
        domain=valid.domain,
        ascii_domain=valid.ascii_domain.lower(),
        display_name=display_name,
    )


# The common case, a plain ASCII dot-atom at an ordinary LDH domain, is checked here in a few
# microseconds; anything else (quoted or non-ASCII local parts, IDN or punycode labels, special-use
# domains, odd lengths) goes to email-validator (~50 us). The fast path accepts a strict subset of
# what email-validator accepts and yields the same parts: a property test pins that down.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_PLAIN_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _parse_plain_ascii(bare: str) -> tuple[str, str] | None:
    """(local part, lower-cased domain) for a plain ASCII address, or None to defer."""
    local, at, domain = bare.rpartition("@")
    if not at or not bare.isascii() or len(bare) > 254 or not 0 < len(local) <= 64:
        return None
    if not _PLAIN_LOCAL.match(local):
        return None
    domain = domain.lower()
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not labels[-1].isalpha():
        return None
    for label in labels:
        if not _PLAIN_LABEL.match(label) or "--" in label:
            return None
    if any(".".join(labels[i:]) in _SPECIAL_USE for i in range(len(labels))):
        return None
    return local, domain


def _unwrap(text: str) -> tuple[str | None, str]:
    """Split `Name <addr>` / `<addr>` / `addr` into (display name, bare address)."""
    if not text.endswith(">"):
        if "<" in text or ">" in text:
            message = f"unbalanced angle brackets in {text!r}"
            raise InvalidAddress(message)
        return None, text
    start = text.rfind("<")
    if start < 0:
        message = f"unbalanced angle brackets in {text!r}"
        raise InvalidAddress(message)
    inner = text[start + 1 : -1].strip()
    if "<" in inner or ">" in inner:
        message = f"nested angle brackets in {text!r}"
        raise InvalidAddress(message)
    display = text[:start].strip()
    if len(display) >= 2 and display[0] == display[-1] == '"':
        display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    # RFC 5321 4.1.2: a source route (`@a,@b:user@host`) must be accepted and ignored.
    if inner.startswith("@") and ":" in inner:
        inner = inner.split(":", 1)[1]
    return (display or None), inner
