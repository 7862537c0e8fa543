"""How the SES API sender sends: one frozen value (no boto3 here, so the front door stays light)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from ses_core.smtp.settings import SES_MAX_RECIPIENTS

_positive = attrs.validators.gt(0)
_positive_float = attrs.validators.gt(0.0)


def _delays(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


@attrs.frozen
class SesApiSettings:
    """How the SES v2 API sender reaches and uses SES.

    Attributes:
        region: the AWS region (None: boto3's usual `AWS_REGION`/`AWS_DEFAULT_REGION`).
        configuration_set: the default configuration set (an `X-SES-CONFIGURATION-SET` header
            overrides it per message).
        concurrency: `SendEmail` calls in flight at most (threads, and kept-alive connections).
        timeout: seconds to connect, and to wait for SES's answer once the request was sent.
        max_recipients_per_message: recipients per call (SES allows 50).
        max_attempts: calls tried per chunk at most.
        default_deadline: seconds allowed per send when the caller gives no deadline.
        throttle_backoff: waits before retrying a throttled call (the last one repeats); AWS
            advises backing off by seconds, as on the SMTP path.
        transient_backoff: waits before retrying a transient failure (the last one repeats).
    """

    region: str | None = None
    configuration_set: str | None = None
    concurrency: int = attrs.field(default=4, validator=_positive)
    timeout: float = attrs.field(default=30.0, validator=_positive_float)
    max_recipients_per_message: int = attrs.field(default=SES_MAX_RECIPIENTS)
    max_attempts: int = attrs.field(default=8, validator=_positive)
    default_deadline: float = attrs.field(default=120.0, validator=_positive_float)
    throttle_backoff: tuple[float, ...] = attrs.field(default=(5.0, 10.0, 30.0), converter=_delays)
    transient_backoff: tuple[float, ...] = attrs.field(default=(1.0, 2.0, 5.0), converter=_delays)

    def __attrs_post_init__(self) -> None:
        if not 0 < self.max_recipients_per_message <= SES_MAX_RECIPIENTS:
            message = f"max_recipients_per_message must be 1..{SES_MAX_RECIPIENTS}"
            raise ValueError(message)
        if not self.throttle_backoff or not self.transient_backoff:
            message = "backoff schedules must not be empty"
            raise ValueError(message)
