"""The fault script of the SES stand-in: where a fault strikes, what it does, and for how long.

A `Fault` is one scripted misbehaviour (reply, drop or stall) at one `Stage` of an SMTP session;
a `FaultScript` holds the faults an upstream applies next and is changed from any thread while
the upstream runs. The `SES_*` pairs are SES's own reply codes and wording (see
docs/ses-facts.md), so tests script faults the way SES answers on a bad day.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable

import attrs

SES_THROTTLED = (454, "Throttling failure: Maximum sending rate exceeded.")
SES_DAILY_QUOTA = (454, "Throttling failure: Daily message quota exceeded.")
SES_TEMPORARY_AUTH = (454, "Temporary authentication failure")
SES_TEMPORARY_FAILURE = (451, "Temporary service failure")
SES_TEMPORARY_FAILURE_454 = (454, "Temporary service failure")
SES_MAX_MESSAGES = (421, "Maximum message count per session reached")
SES_TOO_MANY_CONNECTIONS = (421, "Too many concurrent SMTP connections")
SES_BAD_CREDENTIALS = (535, "Authentication Credentials Invalid")
SES_TOO_LONG = (552, "Message is too long")
SES_NOT_VERIFIED = (554, "Message rejected: Email address is not verified.")
SES_INVALID_ADDRESS = (553, "5.1.3 Invalid email address")
SES_ACCESS_DENIED = (
    554,
    "Access denied: User `arn:aws:iam::123456789012:user/ses-smtp-user' is not authorized to "
    "perform `ses:SendRawEmail' on resource "
    "`arn:aws:ses:eu-west-1:123456789012:identity/example.com'",
)

#: SES accepts at most 40 MB after encoding.
SES_MAX_SIZE = 40 * 1024 * 1024


class Stage(enum.Enum):
    """Where in a session a fault strikes.

    EHLO faults count every EHLO command: a STARTTLS session says EHLO twice (before STARTTLS,
    and again after it, as RFC 3207 requires), an implicit-TLS session once. So with STARTTLS
    `times=1` strikes the next EHLO, the clear-text one of the next session to open. To strike
    the EHLO under TLS, let the first one pass with a zero-second stall set before the fault
    (earlier rules win):

        upstream.faults.set(Fault.stall(Stage.EHLO, 0.0))  # the clear-text EHLO, unchanged
        upstream.faults.set(Fault.drop(Stage.EHLO))  # the EHLO under TLS
    """

    CONNECT = "connect"  # instead of the 220 greeting
    EHLO = "ehlo"  # instead of the EHLO reply; every EHLO counts
    STARTTLS = "starttls"  # the TLS handshake fails (any fault)
    AUTH = "auth"  # instead of 235 (or 535), once the credentials have arrived
    MAIL = "mail"  # instead of the MAIL reply ("drop before MAIL" answers nothing)
    RCPT = "rcpt"  # instead of a RCPT reply, optionally for one recipient only
    DATA = "data"  # instead of 354 (the body has not been sent)
    BODY = "body"  # while the body arrives (drop only)
    END_OF_DATA = "end_of_data"  # after the final '.'; a drop keeps the message first


class Action(enum.Enum):
    """What a fault does."""

    REPLY = "reply"  # answer `code text` instead of the normal reply
    DROP = "drop"  # close the connection without replying
    STALL = "stall"  # wait `delay` seconds, then behave normally


@attrs.frozen
class Fault:
    """One scripted misbehaviour at one stage of a session.

    Attributes:
        stage: where it strikes.
        action: reply, drop or stall.
        code: the reply code (REPLY only).
        text: the reply text (REPLY only).
        recipient: for RCPT faults, the only recipient it applies to (None: any).
        delay: seconds to wait before acting (ignored at STARTTLS).
    """

    stage: Stage
    action: Action
    code: int = 0
    text: str = ""
    recipient: str | None = None
    delay: float = 0.0

    @classmethod
    def reply(
        cls, stage: Stage, code: int, text: str, *, recipient: str | None = None, delay: float = 0.0
    ) -> Fault:
        """Answer `code text` at `stage`."""
        return cls(stage, Action.REPLY, code, text, recipient, delay)

    @classmethod
    def drop(cls, stage: Stage, *, recipient: str | None = None, delay: float = 0.0) -> Fault:
        """Close the connection at `stage` without replying."""
        return cls(stage, Action.DROP, recipient=recipient, delay=delay)

    @classmethod
    def stall(cls, stage: Stage, seconds: float, *, recipient: str | None = None) -> Fault:
        """Wait `seconds` at `stage`, then go on normally (a slow upstream)."""
        return cls(stage, Action.STALL, recipient=recipient, delay=seconds)

    @classmethod
    def tls_failure(cls) -> Fault:
        """Accept STARTTLS, then fail the handshake."""
        return cls(Stage.STARTTLS, Action.DROP)

    @property
    def drops(self) -> bool:
        """Whether the fault drops the connection."""
        return self.action is Action.DROP

    @property
    def line(self) -> str:
        """The reply line to send."""
        return f"{self.code} {self.text}"

    def matches(self, stage: Stage, recipient: str | None) -> bool:
        """Whether the fault applies at `stage` (for `recipient`, at RCPT)."""
        if stage is not self.stage:
            return False
        return self.recipient is None or (
            recipient is not None and recipient.lower() == self.recipient.lower()
        )


@attrs.define
class _Rule:
    fault: Fault
    remaining: int | None
    expires_at: float | None


class FaultScript:
    """The faults an upstream applies, changeable while it runs (thread-safe).

    `set(fault, times=1)` applies a fault to the next matching event; `times=None` keeps it until
    `clear()` or until `duration` seconds have passed. Earlier rules win.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self.applied: list[Fault] = []

    def set(self, fault: Fault, *, times: int | None = 1, duration: float | None = None) -> None:
        """Apply `fault` to the next `times` matching events (None: all) for `duration` seconds."""
        if times is not None and times < 1:
            message = f"times must be at least 1 or None, got {times}"
            raise ValueError(message)
        expires_at = None if duration is None else self._clock() + duration
        with self._lock:
            self._rules.append(_Rule(fault, times, expires_at))

    def clear(self) -> None:
        """Remove every fault."""
        with self._lock:
            self._rules.clear()

    def take(self, stage: Stage, recipient: str | None = None) -> Fault | None:
        """The fault to apply now at `stage`, if any, counting it."""
        now = self._clock()
        with self._lock:
            self._rules = [r for r in self._rules if r.expires_at is None or r.expires_at > now]
            for rule in self._rules:
                if rule.fault.matches(stage, recipient):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._rules.remove(rule)
                    self.applied.append(rule.fault)
                    return rule.fault
        return None
