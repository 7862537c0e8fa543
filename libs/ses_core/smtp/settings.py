"""How to reach and use the SES SMTP endpoint: one frozen value shared by the client and its pool.

It lives apart from the client so that the pool, the transaction and the client all depend on it
and never on each other. SES's limits behind the defaults are in `docs/ses-facts.md`.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

#: SES refuses a message with more recipients (To+Cc+Bcc) than this.
SES_MAX_RECIPIENTS = 50
IMPLICIT_TLS_PORTS = frozenset({465, 2465})


def _delays(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in value)


def _schedule(
    instance: object, attribute: attrs.Attribute[tuple[float, ...]], value: tuple[float, ...]
) -> None:
    if not value or any(delay < 0 for delay in value):
        message = f"{attribute.name} must be a non-empty tuple of delays >= 0, got {value!r}"
        raise ValueError(message)


_positive = attrs.validators.gt(0)
_positive_float = attrs.validators.gt(0.0)


@attrs.frozen
class SmtpSettings:
    """How to reach and use the SES SMTP endpoint.

    Attributes:
        host: e.g. `email-smtp.eu-west-1.amazonaws.com`.
        port: 587, 25, 2587 (STARTTLS) or 465, 2465 (implicit TLS).
        username: SMTP user name (the IAM access key id).
        password: SMTP password (never logged, not in repr).
        implicit_tls: None chooses by port (465 and 2465 are implicit TLS).
        pool_size: sessions kept open at most.
        max_messages_per_connection: a session is recycled after this many messages.
        max_connection_age: a session is recycled after this many seconds.
        timeout: seconds allowed for each SMTP command and for opening a session.
        ca_file: trusted CAs instead of the system's (tests only; verification stays on).
        server_hostname: name to verify in the certificate when `host` is an address.
        local_hostname: name sent in EHLO (default: this machine's host name).
        max_recipients_per_message: recipients per transaction (SES allows 50).
        max_attempts: transactions tried per chunk at most.
        default_deadline: seconds allowed per send when the caller gives no deadline.
        throttle_backoff: waits before retrying a throttled send (the last one repeats).
        transient_backoff: waits before retrying a transient failure (the last one repeats).
        reconnect_backoff: first wait after a failed connection attempt (doubles each time).
        reconnect_backoff_max: longest wait between connection attempts.
        probe_timeout: seconds a readiness probe may take (opening its session included; at most
            `timeout`): below the relay's 5 s `/readyz` timeout, so that a silent upstream is
            reported as such rather than as a probe that ran out of time.
    """

    host: str
    port: int = attrs.field(default=587)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    implicit_tls: bool | None = None
    pool_size: int = attrs.field(default=4, validator=_positive)
    max_messages_per_connection: int = attrs.field(default=100, validator=_positive)
    max_connection_age: float = attrs.field(default=300.0, validator=_positive_float)
    timeout: float = attrs.field(default=30.0, validator=_positive_float)
    ca_file: str | None = None
    server_hostname: str | None = None
    local_hostname: str | None = None
    max_recipients_per_message: int = attrs.field(default=SES_MAX_RECIPIENTS)
    max_attempts: int = attrs.field(default=8, validator=_positive)
    default_deadline: float = attrs.field(default=120.0, validator=_positive_float)
    throttle_backoff: tuple[float, ...] = attrs.field(
        default=(5.0, 10.0, 30.0), converter=_delays, validator=_schedule
    )
    transient_backoff: tuple[float, ...] = attrs.field(
        default=(1.0, 2.0, 5.0), converter=_delays, validator=_schedule
    )
    reconnect_backoff: float = attrs.field(default=0.1, validator=_positive_float)
    reconnect_backoff_max: float = attrs.field(default=5.0, validator=_positive_float)
    probe_timeout: float = attrs.field(default=3.0, validator=_positive_float)

    def __attrs_post_init__(self) -> None:
        if not 0 < self.port < 65536:
            message = f"port out of range: {self.port}"
            raise ValueError(message)
        if (self.username is None) != (self.password is None):
            message = "give both username and password, or neither"
            raise ValueError(message)
        if not 0 < self.max_recipients_per_message <= SES_MAX_RECIPIENTS:
            message = f"max_recipients_per_message must be 1..{SES_MAX_RECIPIENTS}"
            raise ValueError(message)

    @classmethod
    def for_region(
        cls, region: str, username: str, password: str, **options: object
    ) -> SmtpSettings:
        """Settings for the SES SMTP endpoint of an AWS region (STARTTLS on 587)."""
        host = f"email-smtp.{region}.amazonaws.com"
        return cls(host, username=username, password=password, **options)  # type: ignore[arg-type]

    @property
    def uses_implicit_tls(self) -> bool:
        """Whether the session starts with TLS (else STARTTLS)."""
        if self.implicit_tls is None:
            return self.port in IMPLICIT_TLS_PORTS
        return self.implicit_tls

    @property
    def tls_server_name(self) -> str:
        """The name the server certificate must match."""
        return self.server_hostname or self.host
