"""What the relay tells the client when the upstream (or a local part) did not accept a message.

The texts name what failed, so that an operator reading a client's bounce log can act on it: the
upstream's throttling, quota, credentials or reachability, or the relay's own rate limiter and
local outbox, which are never blamed on the upstream. See the README's "SMTP replies" table.
"""

from __future__ import annotations

from relay.outbox import WRITE_FAILED
from ses_core.smtp import RecipientResult, ReplyClass

_RATE_WAIT_EXCEEDED = "451 4.7.0 Send rate limit: wait exceeded, try again later"
_LIMITER_DOWN = "451 4.3.0 Rate limiter unavailable, try again later"
#: MAIL FROM:<> when no RELAY_BOUNCE_FROM is set: SES needs a verified identity as sender.
NULL_SENDER_REFUSED = (
    "550 5.7.1 Null sender not accepted: set RELAY_BOUNCE_FROM to a verified identity"
)
_MAX_REASON = 200


def deferred_reply(deferred: tuple[RecipientResult, ...]) -> tuple[str, str]:
    """The 451 for recipients that were all deferred, and the reason label for metrics/logs."""
    classes = {r.reply_class for r in deferred}
    sample = deferred[0]
    upstream = f"(upstream {sample.code})"
    if classes == {ReplyClass.RATE_LIMITED}:
        return _RATE_WAIT_EXCEEDED, "rate_wait_exceeded"
    if ReplyClass.LIMITER_UNAVAILABLE in classes:
        return _LIMITER_DOWN, "limiter_unavailable"
    if sample.text == WRITE_FAILED:
        return f"451 {WRITE_FAILED}, try again later", "outbox_write_failed"
    if ReplyClass.DAILY_QUOTA in classes:
        return f"451 4.7.0 Daily sending quota exceeded, try again later {upstream}", "daily_quota"
    if classes & {ReplyClass.THROTTLED, ReplyClass.RATE_LIMITED}:
        return f"451 4.7.0 Upstream throttled, try again later {upstream}", "throttled"
    if ReplyClass.AUTH in classes:
        return (
            f"451 4.7.0 Upstream refused the relay's credentials, try again later {upstream}",
            "upstream_auth",
        )
    if ReplyClass.CONNECTION in classes:
        return "451 4.4.1 Upstream unreachable, try again later", "connection"
    return f"451 4.3.0 Upstream temporary failure, try again later {upstream}", "transient"


def permanent_reply(refused: RecipientResult) -> str:
    """The upstream's own 5xx and text (554 when its code is not a 5xx)."""
    code = refused.code if 500 <= refused.code < 600 else 554
    return f"{code} {short(refused.text) or 'Transaction failed'}"


def short(text: str) -> str:
    """`text` fit for a reply: one line (CR/LF stripped), at most 200 characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 3] + "..."
