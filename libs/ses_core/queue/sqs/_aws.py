"""Running boto3 calls off the event loop, and what a failed call means for the spool.

boto3 blocks, and a relay's event loop serves SMTP sessions, so every call runs on the spool's own
small thread pool (not asyncio's default one, which the blacklist lookups share): a slow S3 PUT
then delays only other spool calls. Every botocore failure becomes `SpoolUnavailable` with one
line naming the service, the operation and AWS's error code: a client gets a 4xx, an operator
gets something to act on, and no traceback or credential ever reaches either.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from botocore import exceptions as botoexc

from ses_core.errors import SpoolUnavailable

T = TypeVar("T")

#: What a boto3 call may raise that means "the service did not do it".
AWS_ERRORS = (botoexc.ClientError, botoexc.BotoCoreError)

_REASON_LIMIT = 300


def error_code(exc: BaseException) -> str:
    """AWS's error code of a `ClientError` ("NoSuchKey", "AccessDenied"), else ""."""
    if isinstance(exc, botoexc.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def describe(exc: BaseException) -> str:
    """One line saying why a call failed, without a traceback."""
    if isinstance(exc, botoexc.ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', 'Unknown')}: {error.get('Message', '')}".rstrip(": ")
    elif isinstance(exc, botoexc.NoCredentialsError | botoexc.PartialCredentialsError):
        text = "no usable AWS credentials"
    elif isinstance(exc, botoexc.ConnectionError | botoexc.HTTPClientError):
        text = f"endpoint unreachable or timed out ({exc})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    line = " ".join(text.split())
    return line if len(line) <= _REASON_LIMIT else line[: _REASON_LIMIT - 3] + "..."


def unavailable(service: str, operation: str, exc: BaseException) -> SpoolUnavailable:
    """The `SpoolUnavailable` for a failed call (raise it `from None`: the cause is in the text)."""
    return SpoolUnavailable(f"{service} {operation} failed: {describe(exc)}")


class Calls:
    """Runs blocking calls on a dedicated pool of `threads` threads."""

    def __init__(self, threads: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sqs-spool")

    async def run(self, function: Callable[..., T], /, **kwargs: Any) -> T:
        """`function(**kwargs)` on the pool; its exception, if any, as it was raised."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, **kwargs))

    async def aws(
        self, service: str, operation: str, function: Callable[..., T], **kwargs: Any
    ) -> T:
        """`function(**kwargs)` on the pool; a botocore failure as `SpoolUnavailable`."""
        try:
            return await self.run(function, **kwargs)
        except AWS_ERRORS as exc:
            raise unavailable(service, operation, exc) from None

    def shutdown(self) -> None:
        """Stop the threads once the calls already started have returned."""
        self._pool.shutdown(wait=False, cancel_futures=True)
