"""`DeliverySettings`: how the delivery workers run (re-exported by `ses_core.queue.delivery`)."""

from __future__ import annotations

from typing import Any

import attrs

from ses_core.queue.backoff import Backoff

#: RELAY_QUEUE_LIFETIME's default: 5 days, as RFC 5321 section 4.5.4.1 suggests (4-5 days).
DEFAULT_LIFETIME = 5 * 24 * 3600.0


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        message = f"{attribute.name} must be positive, not {value!r}"
        raise ValueError(message)


@attrs.frozen
class DeliverySettings:
    """How the queue's delivery workers run.

    Attributes:
        workers: deliveries in flight at most (each holds one leased message).
        attempt_timeout: seconds one attempt may take; handed to the sender as its deadline
            (rate-limiter waits and the sender's own quick retries happen within it).
        lifetime: seconds a message may stay queued (from `received_at`); a recipient still
            deferred at its end is FAILED (4.4.7) and reported to the sender.
        bounce_from: the verified identity DSNs are sent from (their From, and through
            `null_sender` their SES envelope sender); None: no DSN can be sent, and a message
            with a failed recipient is dead-lettered ("undeliverable") for an operator.
        null_sender: the envelope sender a null-sender ("") message goes out with (SES needs a
            verified identity: RELAY_BOUNCE_FROM; a local outbox keeps ""); None keeps "".
        reporting_mta: this host's name, for the DSNs' Reporting-MTA and Message-ID.
        lease_batch: messages leased per spool call at most.
        backoff: the retry schedule by reason.
        idle_poll: longest sleep of the dispatcher when nothing is due (a put elsewhere, e.g. by
            another replica or an operator's `retry`, is noticed within it).
        heartbeat_interval: seconds between `Spool.heartbeat` calls while a send runs.
        spool_retry: first pause before writing an attempt's outcome again after the spool
            failed to store it (doubling, 4 more tries).
    """

    workers: int = attrs.field(default=32, validator=_positive)
    attempt_timeout: float = attrs.field(default=30.0, validator=_positive)
    lifetime: float = attrs.field(default=DEFAULT_LIFETIME, validator=_positive)
    bounce_from: str | None = None
    null_sender: str | None = None
    reporting_mta: str = "localhost"
    lease_batch: int = attrs.field(default=32, validator=_positive)
    backoff: Backoff = attrs.field(factory=Backoff)
    idle_poll: float = attrs.field(default=1.0, validator=_positive)
    heartbeat_interval: float = attrs.field(default=60.0, validator=_positive)
    spool_retry: float = attrs.field(default=1.0, validator=_positive)
