"""What an SES v2 API error means: the same `Reply`/`ReplyClass` as an SMTP answer.

SES's SMTP interface and its API report the same conditions in different words; mapping them onto
the SMTP client's classes keeps the relay's replies and retries identical for both upstreams:
- throttling (`TooManyRequestsException`, `LimitExceededException`, `Throttling`) is read like
  SMTP's `454 Throttling failure`, so the daily quota ("Daily message quota exceeded") is
  DAILY_QUOTA (the quota poller learns from it) and the rate ("Maximum sending rate exceeded")
  THROTTLED, retried with backoff and never a 5xx;
- a refused message (`MessageRejected`, `MailFromDomainNotVerifiedException`, invalid
  parameters) is PERMANENT for the call's recipients, as a `554` would be;
- the account (`AccountSuspendedException`, `SendingPausedException`) and the credentials
  (expired, unknown, access denied) are AUTH: the mail is fine, the operator must act, so it is
  deferred and logged loudly;
- HTTP 5xx and anything not recognised are TRANSIENT: when in doubt, keep the mail.
"""

from __future__ import annotations

from ses_core.errors import UpstreamUnavailable
from ses_core.smtp.results import Reply, ReplyClass, classify_reply

THROTTLING = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "Throttling", "ThrottlingException"}
)
PERMANENT = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
        "InvalidParameterValue",
        "NotFoundException",
        "ValidationException",
    }
)


class AccountSuspended(UpstreamUnavailable):
    """SES suspended the account: nothing can be sent until AWS lifts it."""


class SendingPaused(UpstreamUnavailable):
    """Sending is paused for the account (or for the configuration set used)."""


#: The account cannot send at all: the probe raises these (their names are what `/readyz`
#: shows) until a send succeeds again.
ACCOUNT: dict[str, type[UpstreamUnavailable]] = {
    "AccountSuspendedException": AccountSuspended,
    "SendingPausedException": SendingPaused,
}
CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AccessDeniedException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)


def reply_for_error(code: str, message: str, status: int | None) -> Reply:
    """The reply an SES API error stands for (see the module docstring)."""
    detail = f"SES API {code}: {' '.join(message.split())}".rstrip(": ")
    if code in THROTTLING or status == 429:
        # "throttling" makes `classify_reply` read it like SMTP's 454 Throttling failure.
        return Reply.from_upstream(454, f"4.7.0 Throttling failure: {detail}")
    if code in ACCOUNT:
        return Reply(454, f"4.7.0 SES account cannot send: {detail}", ReplyClass.AUTH)
    if code in CREDENTIALS or status in (401, 403):
        return Reply(
            454, f"4.7.0 SES API refused the relay's credentials: {detail}", ReplyClass.AUTH
        )
    if code in PERMANENT:
        return Reply(554, f"5.6.0 {detail}", ReplyClass.PERMANENT)
    if status is not None and status >= 500:
        return Reply(451, f"4.4.0 {detail} (HTTP {status})", ReplyClass.TRANSIENT)
    return Reply(451, f"4.3.0 {detail}", classify_reply(451, detail))
