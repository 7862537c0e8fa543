"""SES feedback: bounces, complaints and other notifications, read from any transport and decided.

`parse_feedback`/`iter_feedback` unwrap a Lambda event, an SNS or SQS body or bare SES JSON into
`FeedbackRecord`s; `decide_suppression` says which recipients to blacklist under a
`SuppressionPolicy`. Everything here is pure and light, so the Lambda imports it cheaply. SNS
signature checks need `cryptography`: import them from `ses_core.feedback.sns_signature`.
"""

from ses_core.feedback._recipients import InvalidRecipient
from ses_core.feedback.mail import CommonHeaders, Mail
from ses_core.feedback.notifications import (
    Bounce,
    BouncedRecipient,
    Complaint,
    Delivery,
    NotificationFormat,
    NotificationKind,
    SesNotification,
)
from ses_core.feedback.suppression import (
    DEFAULT_POLICY,
    BounceThreshold,
    RecipientDecision,
    SuppressionDecision,
    SuppressionPolicy,
    Verdict,
    decide_suppression,
)
from ses_core.feedback.transport import (
    EnvelopeOrigin,
    FeedbackInput,
    FeedbackRecord,
    RecordFailure,
    TransportEnvelope,
    iter_feedback,
    parse_feedback,
)

__all__ = [
    "DEFAULT_POLICY",
    "Bounce",
    "BounceThreshold",
    "BouncedRecipient",
    "CommonHeaders",
    "Complaint",
    "Delivery",
    "EnvelopeOrigin",
    "FeedbackInput",
    "FeedbackRecord",
    "InvalidRecipient",
    "Mail",
    "NotificationFormat",
    "NotificationKind",
    "RecipientDecision",
    "RecordFailure",
    "SesNotification",
    "SuppressionDecision",
    "SuppressionPolicy",
    "TransportEnvelope",
    "Verdict",
    "decide_suppression",
    "iter_feedback",
    "parse_feedback",
]
