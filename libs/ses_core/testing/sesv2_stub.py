"""A loopback SES v2 endpoint with scripted answers: `SendEmail` and `GetAccount` on the wire.

moto's SES v2 is enough for a plain success, but it ignores configuration sets and tags, decodes
raw data as UTF-8 and adds header addresses to the destinations; it cannot answer with SES's
errors either. `SesV2Stub` is a real HTTP/1.1 server (keep-alive, a thread per connection) that a
real boto3 client reaches through `endpoint_url` or `AWS_ENDPOINT_URL_SESV2`:

- `POST /v2/email/outbound-emails` records the request (`SentRequest`: the decoded raw bytes,
  destinations, configuration set, tags) and answers with the next scripted `Answer`, or a success
  with a fresh `MessageId` when the script is empty;
- `GET /v2/email/account` answers a sending quota, so `SES_RATE_LIMIT=auto` can start against it.
Errors go out as SES sends them (restJson1): the status, `x-amzn-ErrorType` and a JSON body with
`message`. An answer's `delay` is slept before replying (the benchmark's 20 ms SES, or a silence
longer than the client's read timeout); every sleep is bounded by `stop()`.
"""

from __future__ import annotations

import base64
import collections
import http.server
import itertools
import json
import threading
from types import TracebackType
from typing import Any

import attrs

from ses_core.testing.ports import LOOPBACK


@attrs.frozen
class Answer:
    """One scripted answer.

    Attributes:
        status: the HTTP status (200 for a success).
        error: the error code (`x-amzn-ErrorType`), for a status other than 200.
        message: the error message.
        delay: seconds to wait before answering (after reading the request).
    """

    status: int = 200
    error: str = ""
    message: str = ""
    delay: float = 0.0

    @classmethod
    def failure(cls, status: int, error: str, message: str = "") -> Answer:
        """An SES error answer."""
        return cls(status, error, message or error)

    @classmethod
    def silence(cls, seconds: float) -> Answer:
        """No answer for `seconds` (longer than the client's read timeout), then a success."""
        return cls(delay=seconds)


@attrs.frozen
class SentRequest:
    """A `SendEmail` request as the stub read it.

    Attributes:
        data: `Content.Raw.Data`, decoded: the exact bytes the client sent.
        sender: `FromEmailAddress`.
        to: `Destination.ToAddresses`.
        configuration_set: `ConfigurationSetName`, or None.
        tags: `EmailTags` as (name, value) pairs.
        message_id: the id answered (None for an error answer).
    """

    data: bytes
    sender: str | None
    to: tuple[str, ...]
    configuration_set: str | None
    tags: tuple[tuple[str, str], ...]
    message_id: str | None


class SesV2Stub:
    """The stub server (a context manager); see the module docstring.

    Attributes:
        url: `http://127.0.0.1:<port>`, for `endpoint_url` or `AWS_ENDPOINT_URL_SESV2`.
        requests: every `SendEmail` read, in order.
        default: the answer when the script is empty (a success unless changed).
    """

    def __init__(self, *, default: Answer | None = None, max_send_rate: float = 100.0) -> None:
        self.requests: list[SentRequest] = []
        self.default = default or Answer()
        self.max_send_rate = max_send_rate
        #: Fields that replace `GetAccount`'s defaults (`SendingEnabled`, `EnforcementStatus`,
        #: `SendQuota`, ...): an account SES paused, for instance.
        self.account: dict[str, Any] = {}
        self._script: collections.deque[Answer] = collections.deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="sesv2-stub")
        self._thread.daemon = True

    def script(self, *answers: Answer) -> None:
        """Answer the next `SendEmail` calls with `answers`, in order."""
        with self._lock:
            self._script.extend(answers)

    def start(self) -> SesV2Stub:
        """Start serving; returns the stub."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every scripted wait."""
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> SesV2Stub:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _next(self) -> Answer:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _send_email(self, body: dict[str, Any]) -> tuple[Answer, str | None]:
        answer = self._next()
        message_id = None
        if answer.status == 200:
            message_id = f"0100stub-{next(self._ids):08d}-000000"
        raw = body.get("Content", {}).get("Raw", {}).get("Data", "")
        request = SentRequest(
            data=base64.b64decode(raw),
            sender=body.get("FromEmailAddress"),
            to=tuple(body.get("Destination", {}).get("ToAddresses", ())),
            configuration_set=body.get("ConfigurationSetName"),
            tags=tuple((t["Name"], t["Value"]) for t in body.get("EmailTags", ())),
            message_id=message_id,
        )
        with self._lock:
            self.requests.append(request)
        if answer.delay:
            self._stopping.wait(answer.delay)
        return answer, message_id

    def _account(self) -> dict[str, Any]:
        quota = {"Max24HourSend": 50000.0, "MaxSendRate": self.max_send_rate, "SentLast24Hours": 0}
        default = {"SendQuota": quota, "SendingEnabled": True, "ProductionAccessEnabled": True}
        return {**default, **self.account}


def _handler(stub: SesV2Stub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as SES's endpoint

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            return

        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/v2/email/account":
                self._answer(Answer(), stub._account())
            else:
                self._answer(Answer.failure(404, "NotFoundException"), {})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path.split("?")[0] != "/v2/email/outbound-emails":
                self._answer(Answer.failure(404, "NotFoundException"), {})
                return
            answer, message_id = stub._send_email(body)
            self._answer(answer, {"MessageId": message_id})

        def _answer(self, answer: Answer, payload: dict[str, Any]) -> None:
            if answer.status != 200:
                payload = {"message": answer.message}
            data = json.dumps(payload).encode()
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if answer.status != 200:
                    self.send_header("x-amzn-ErrorType", answer.error)
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client gave up (its read timeout)

    return Handler
