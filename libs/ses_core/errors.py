"""Every exception ses_core raises, in one place.

Each error derives from `SesCoreError` and from the closest built-in exception, so callers can
catch either the library's family or the familiar built-in (`ValueError`, `ConnectionError`,
`TimeoutError`). Services map them to protocol answers at their edge (the relay's SMTP replies,
the Lambda's retries).
"""

from __future__ import annotations


class SesCoreError(Exception):
    """Base class of every error raised by ses_core."""


class InvalidAddress(SesCoreError, ValueError):
    """An e-mail address could not be parsed; the message says what is wrong."""


class MalformedNotification(SesCoreError, ValueError):
    """An SES/SNS/SQS document is not what it claims to be; `path` names the bad field."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


class SignatureInvalid(SesCoreError, ValueError):
    """An SNS message's signature or signing certificate does not check out."""


class BlacklistUnavailable(SesCoreError, ConnectionError):
    """The blacklist store could not answer; never read this as "not blacklisted"."""


class LookupWouldBlock(SesCoreError):
    """A lookup asked to answer at once (`InstantLookup.lookup_now`) would have to wait for I/O
    or a lock: ask again the blocking way, from a thread. Not a failure of the store."""


class RateLimitTimeout(SesCoreError, TimeoutError):
    """Waiting for send-rate capacity would exceed the caller's deadline."""

    def __init__(self, message: str, wait_seconds: float) -> None:
        super().__init__(message)
        self.wait_seconds = wait_seconds


class RateLimiterUnavailable(SesCoreError, ConnectionError):
    """The shared rate limiter's store is unreachable and the limiter is set to fail closed."""


class DailyQuotaExhausted(SesCoreError):
    """The account's rolling 24-hour sending quota is used up; retry later, never drop."""


class SesQuotaUnavailable(SesCoreError, ConnectionError):
    """Neither SES API answered with the account's quota; the message (one line) says why for
    each API: a denied IAM action, an endpoint that did not answer, ..."""


class UpstreamUnavailable(SesCoreError, ConnectionError):
    """The upstream SMTP server (SES) cannot be reached, or refuses the relay's TLS or login."""


class CertificateUnavailable(SesCoreError, ConnectionError):
    """An SNS signing certificate could not be fetched; retry later (not proof of forgery)."""


class SpoolFull(SesCoreError, OSError):
    """The spool cannot take a message now (free disk below its floor, message cap reached, or
    the disk said ENOSPC): answer 452 and let the client retry; never a 250 without the bytes."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SpoolUnavailable(SesCoreError, OSError):
    """The spool's storage failed (an I/O error, a backend that does not answer); nothing was
    stored, so the client gets a 4xx and keeps the message."""


class SpoolCorrupt(SesCoreError, ValueError):
    """A stored message or index cannot be read back as written (checksum or format); it is moved
    aside and reported, never delivered half-read and never a crash."""
