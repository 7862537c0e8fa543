"""ses_core: the reusable heart of ses-relay.

Parsing of SES feedback, the blacklist repository, the SES-aware rate limiter and the pooled SES
SMTP client. Services import the submodules they need (`ses_core.smtp_client`,
`ses_core.blacklist`, ...); this package re-exports only the small, dependency-free core so that a
consumer such as the Lambda never pays for what it does not import. The library reads no
environment variables and holds no service configuration.
"""

from ses_core.addresses import EmailAddress, normalize_address
from ses_core.errors import (
    BlacklistUnavailable,
    DailyQuotaExhausted,
    InvalidAddress,
    MalformedNotification,
    RateLimiterUnavailable,
    RateLimitTimeout,
    SesCoreError,
    SignatureInvalid,
)

__all__ = [
    "BlacklistUnavailable",
    "DailyQuotaExhausted",
    "EmailAddress",
    "InvalidAddress",
    "MalformedNotification",
    "RateLimitTimeout",
    "RateLimiterUnavailable",
    "SesCoreError",
    "SignatureInvalid",
    "normalize_address",
]
