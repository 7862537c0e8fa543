"""Recipient strings SES reports, read as addresses without failing the whole document.

A recipient that is not a valid address must not make its notification malformed (the other
recipients still matter), so it is kept verbatim as an `InvalidRecipient` for the caller to report.
"""

from __future__ import annotations

import attrs

from ses_core.addresses import EmailAddress
from ses_core.errors import InvalidAddress


@attrs.frozen
class InvalidRecipient:
    """A recipient string SES reported that is not a valid address.

    Attributes:
        text: the string exactly as SES wrote it.
        error: why `EmailAddress.parse` refused it.
        path: the JSON path it was read from.
    """

    text: str
    error: str
    path: str


def parse_recipient(text: str, path: str) -> EmailAddress | InvalidRecipient:
    """`text` as an address, or as an InvalidRecipient naming `path` if it is not one."""
    try:
        return EmailAddress.parse(text)
    except InvalidAddress as exc:
        return InvalidRecipient(text=text, error=str(exc), path=path)
