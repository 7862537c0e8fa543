"""The SES v2 API sender: `SendEmail` with the raw message, behind the `MessageSender` port.

`SesApiSender.send` gives the SMTP client's verdicts (ACCEPTED, REFUSED, DEFERRED per recipient)
for the same reasons, so the relay cannot tell the two apart except by the reply texts. On the way:

- the `X-SES-CONFIGURATION-SET`/`X-SES-MESSAGE-TAGS` headers are consumed as SES's SMTP interface
  consumes them (`_headers`); a malformed one REFUSES the message with a `554 5.6.0` naming the
  header (nothing is sent);
- recipients are split into calls of at most 50, as on the SMTP path (`recipient_chunks`); each
  call is one all-or-nothing answer for its recipients;
- each call pays one send-rate token per recipient first (`SendRateCharger`, the SMTP client's
  rule and reply texts);
- calls run on a bounded thread pool (`concurrency` threads, as many kept-alive HTTPS
  connections), so the event loop never blocks on boto3;
- botocore's own retries are off: a throttled or transient answer is retried here, on the SMTP
  client's backoff schedules and only within the deadline. A read timeout after the request was
  sent, or a connection closed before the answer, is the ambiguous case: SES may have sent the
  message, so its recipients are DEFERRED with `AMBIGUOUS_TEXT` and `ambiguous` set and never
  resent here;
- AccountSuspended/SendingPaused defer everything and make `probe()` fail with the account state
  (so `/readyz` shows it) until a send succeeds again; credential failures are logged as errors.
SES's message id is the accepted recipients' reply text (`Ok <id>`, as SES's SMTP `250 Ok <id>`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import botocore.exceptions
from botocore.config import Config

from ses_core.errors import UpstreamUnavailable
from ses_core.ratelimit import RateLimiter
from ses_core.sesapi._errors import ACCOUNT, AccountSuspended, SendingPaused, reply_for_error
from ses_core.sesapi._headers import HeaderError, SesHeaders, consume_ses_headers
from ses_core.sesapi.settings import SesApiSettings
from ses_core.smtp.charging import SendRateCharger
from ses_core.smtp.results import (
    AMBIGUOUS_TEXT,
    RecipientResult,
    Reply,
    ReplyClass,
    SendResult,
    log_recipient_failures,
)
from ses_core.smtp.sender import OutboundMessage, recipient_chunks

__all__ = ["AccountSuspended", "SendingPaused", "SesApiSender", "sesv2_client"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Any]
#: Answers after which SES may have the message although none was read: never resent here.
_AMBIGUOUS = (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)
#: Credentials missing, or not renewable (an expired role session, a failed web-identity call).
_NO_CREDENTIALS = (
    botocore.exceptions.NoCredentialsError,
    botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.TokenRetrievalError,
)


def sesv2_client(settings: SesApiSettings) -> Any:
    """A boto3 SES v2 client for `settings`: boto3's credential chain and endpoint settings
    (`AWS_ENDPOINT_URL_SESV2`), `concurrency` pooled connections, no automatic retries. Raises
    botocore's `NoRegionError` when no region is known."""
    import boto3

    config = Config(
        connect_timeout=settings.timeout,
        read_timeout=settings.timeout,
        max_pool_connections=settings.concurrency,
        retries={"total_max_attempts": 1, "mode": "standard"},
    )
    return boto3.client("sesv2", region_name=settings.region, config=config)


class SesApiSender:
    """Sends mail with SES v2 `SendEmail` (an async context manager); see the module docstring."""

    def __init__(
        self,
        settings: SesApiSettings,
        *,
        client: Any | None = None,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._settings = settings
        self._client = client if client is not None else sesv2_client(settings)
        self._charger = SendRateCharger(limiter, clock=clock, timeout=settings.timeout)
        self._clock = clock
        self._sleep = sleep
        self._executor = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="ses-api")
        self._account_state: UpstreamUnavailable | None = None
        self.ambiguous = 0

    def __repr__(self) -> str:
        region = self._client.meta.region_name
        return f"SesApiSender(region={region!r}, endpoint={self._client.meta.endpoint_url!r})"

    async def __aenter__(self) -> SesApiSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def account_state(self) -> UpstreamUnavailable | None:
        """Why SES said the account cannot send (`AccountSuspended`, `SendingPaused`), or None."""
        return self._account_state

    async def probe(self) -> None:
        """Raise the account state (`AccountSuspended`, `SendingPaused`: subclasses of
        `UpstreamUnavailable` whose names `/readyz` shows) while SES says it cannot send."""
        if self._account_state is not None:
            raise self._account_state

    async def aclose(self) -> None:
        """Stop the threads (calls in flight finish on their own)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def send(self, message: OutboundMessage, *, deadline: float | None = None) -> SendResult:
        """Deliver `message`; see the module docstring for the guarantees."""
        if deadline is None:
            deadline = self._clock() + self._settings.default_deadline
        try:
            headers = consume_ses_headers(message.data)
        except HeaderError as exc:
            reply = Reply(554, f"5.6.0 {exc}", ReplyClass.PERMANENT)
            results = tuple(RecipientResult.for_reply(r, reply) for r in message.recipients)
            return SendResult(results, attempts=0)
        chunks = recipient_chunks(message.recipients, self._settings.max_recipients_per_message)
        parts = [await self._send_chunk(message.sender, c, headers, deadline) for c in chunks]
        return parts[0] if len(parts) == 1 else SendResult.combine(tuple(parts))

    async def _send_chunk(
        self, sender: str, recipients: tuple[str, ...], headers: SesHeaders, deadline: float
    ) -> SendResult:
        request = self._request(sender, recipients, headers)
        attempts = throttled = transient = 0
        waited = 0.0
        reply = Reply(451, "4.4.7 message deadline passed before sending", ReplyClass.TRANSIENT)
        while attempts < self._settings.max_attempts:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            paid = await self._charger.take_early(len(recipients), remaining)
            if isinstance(paid, Reply):
                reply = paid
                break
            waited += paid
            attempts += 1
            answer = await self._call(request)
            if answer is None:
                self.ambiguous += 1
                log.warning(
                    "SES API gave no answer after the request was sent, for a message to %d "
                    "recipient(s): deferred, a retry may duplicate it",
                    len(recipients),
                )
                results = tuple(
                    RecipientResult.deferred(
                        r, 451, AMBIGUOUS_TEXT, ReplyClass.CONNECTION, ambiguous=True
                    )
                    for r in recipients
                )
                return SendResult(results, waited, attempts, ambiguous=True)
            reply = answer
            if not reply.reply_class.retryable_soon:
                break
            s = self._settings
            if reply.reply_class is ReplyClass.THROTTLED:
                delay = s.throttle_backoff[min(throttled, len(s.throttle_backoff) - 1)]
                throttled += 1
            else:
                delay = s.transient_backoff[min(transient, len(s.transient_backoff) - 1)]
                transient += 1
            if self._clock() + delay >= deadline:
                break
            await self._sleep(delay)
        results = tuple(RecipientResult.for_reply(r, reply) for r in recipients)
        log_recipient_failures(log, "SES API", sender, results)
        return SendResult(results, limiter_wait=waited, attempts=attempts)

    def _request(
        self, sender: str, recipients: tuple[str, ...], headers: SesHeaders
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "FromEmailAddress": sender,
            "Destination": {"ToAddresses": list(recipients)},
            "Content": {"Raw": {"Data": headers.data}},
        }
        configuration_set = headers.configuration_set or self._settings.configuration_set
        if configuration_set:
            request["ConfigurationSetName"] = configuration_set
        if headers.tags:
            request["EmailTags"] = [{"Name": n, "Value": v} for n, v in headers.tags]
        return request

    async def _call(self, request: dict[str, Any]) -> Reply | None:
        """One `SendEmail`: SES's answer as a reply, or None for the ambiguous case."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self._client.send_email, **request)
        try:
            response = await loop.run_in_executor(self._executor, call)
        except _AMBIGUOUS:
            return None
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code, text = str(error.get("Code", "")), str(error.get("Message", ""))
            reply = reply_for_error(code, text, status)
            if code in ACCOUNT:
                if self._account_state is None:
                    log.error("SES account cannot send, all mail deferred: %s", reply.text)
                self._account_state = ACCOUNT[code](reply.text)
            elif reply.reply_class is ReplyClass.AUTH:
                log.error("SES API refused the relay's credentials, mail deferred: %s", reply.text)
            return reply
        except _NO_CREDENTIALS as exc:
            log.error("no AWS credentials for the SES API, mail deferred: %s", exc)
            text = f"4.7.0 no usable AWS credentials for the SES API: {exc}"
            return Reply(454, text, ReplyClass.AUTH)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            text = f"4.4.1 SES API unreachable: {type(exc).__name__}: {exc}"
            return Reply(451, text, ReplyClass.CONNECTION)
        self._account_state = None
        return Reply(250, f"Ok {response.get('MessageId', '')}".rstrip(), ReplyClass.SUCCESS)
