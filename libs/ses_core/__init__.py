"""ses_core: the reusable heart of ses-relay.

Parsing of SES feedback, the blacklist repository, the SES-aware rate limiter and the pooled SES
SMTP client. This package re-exports the small core that has no heavy dependencies (addresses,
errors, feedback parsing, the suppression decision, the blacklist port and its in-memory
adapter). Adapters with third-party clients are imported from their modules, so a consumer such
as the Lambda never pays for what it does not use:
`ses_core.blacklist.dynamodb`, `ses_core.blacklist.sqlite`, `ses_core.blacklist.cache`,
`ses_core.ratelimit.local`, `ses_core.ratelimit.redis`, `ses_core.ratelimit.ses_quota`,
`ses_core.smtp.client`, `ses_core.feedback.sns_signature`, and the test doubles in `ses_core.testing`.
The library reads no environment variables and holds no service configuration.
"""

from ses_core.addresses import EmailAddress, normalize_address
from ses_core.blacklist.model import (
    Blacklist,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    BlacklistReason,
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
from ses_core.feedback.notifications import (
    Bounce,
    Complaint,
    Delivery,
    Mail,
    NotificationKind,
    SesNotification,
)
from ses_core.feedback.suppression import (
    DEFAULT_POLICY,
    SuppressionDecision,
    SuppressionPolicy,
    Verdict,
    decide_suppression,
)
from ses_core.feedback.transport import FeedbackRecord, RecordFailure, iter_feedback, parse_feedback

__all__ = [
    "DEFAULT_POLICY",
    "Blacklist",
    "BlacklistEntry",
    "BlacklistEvent",
    "BlacklistPage",
    "BlacklistReason",
    "BlacklistUnavailable",
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
