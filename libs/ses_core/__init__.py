"""ses_core: the reusable heart of ses-relay, in four parts plus the queue and a small shared core.

- `ses_core.feedback`: SES bounce/complaint notifications, their transports, the suppression policy;
- `ses_core.blacklist`: the blacklist repository (ports, memory, cache, SQLite, DynamoDB);
- `ses_core.ratelimit`: per-recipient rate limiting, local or shared through Redis, and SES quotas;
- `ses_core.smtp`: the pooled SES SMTP client;
- `ses_core.queue`: the durable spool (local SQLite or shared SQS + S3) and its delivery workers.

This front door re-exports the light core (addresses, errors, feedback parsing and the blacklist
values and ports); adapters with third-party clients are imported from their own modules, so a
consumer such as the Lambda never pays for what it does not use (see docs/architecture.md). The
library reads no environment variables and holds no service configuration.
"""

from ses_core.addresses import EmailAddress, normalize_address
from ses_core.blacklist import (
    Blacklist,
    BlacklistAdmin,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    BlacklistReader,
    BlacklistReason,
    BlacklistWriter,
    InMemoryBlacklist,
)
from ses_core.errors import (
    BlacklistUnavailable,
    CertificateUnavailable,
    DailyQuotaExhausted,
    InvalidAddress,
    MalformedNotification,
    RateLimiterUnavailable,
    RateLimitTimeout,
    SesCoreError,
    SignatureInvalid,
    UpstreamUnavailable,
)
from ses_core.feedback import (
    DEFAULT_POLICY,
    Bounce,
    Complaint,
    Delivery,
    FeedbackRecord,
    Mail,
    NotificationKind,
    RecordFailure,
    SesNotification,
    SuppressionDecision,
    SuppressionPolicy,
    Verdict,
    decide_suppression,
    iter_feedback,
    parse_feedback,
)

__all__ = [
    "DEFAULT_POLICY",
    "Blacklist",
    "BlacklistAdmin",
    "BlacklistEntry",
    "BlacklistEvent",
    "BlacklistPage",
    "BlacklistReader",
    "BlacklistReason",
    "BlacklistUnavailable",
    "BlacklistWriter",
    "Bounce",
    "CertificateUnavailable",
    "Complaint",
    "DailyQuotaExhausted",
    "Delivery",
    "EmailAddress",
    "FeedbackRecord",
    "InMemoryBlacklist",
    "InvalidAddress",
    "Mail",
    "MalformedNotification",
    "NotificationKind",
    "RateLimitTimeout",
    "RateLimiterUnavailable",
    "RecordFailure",
    "SesCoreError",
    "SesNotification",
    "SignatureInvalid",
    "SuppressionDecision",
    "SuppressionPolicy",
    "UpstreamUnavailable",
    "Verdict",
    "decide_suppression",
    "iter_feedback",
    "normalize_address",
    "parse_feedback",
]
