"""What a failed DynamoDB call means: every client or transport error is `BlacklistUnavailable`.

A blacklist that cannot answer must never read as "not blacklisted", so no botocore error
escapes this package; the message names the cause (throttled, table not found, credentials
rejected, unreachable) so that an operator can act on it. A refused conditional write is not a
failure: it is `ConditionFailed`, for the caller that asked for the condition.
"""

from __future__ import annotations

from botocore import exceptions as botoexc

from ses_core.errors import BlacklistUnavailable

#: Attempts of an optimistic read-modify-write before giving up as contended.
MAX_WRITE_ATTEMPTS = 5

_THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "Throttling",
        "TooManyRequestsException",
    }
)
_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "AccessDeniedException",
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
    }
)
_CONDITION_FAILED = "ConditionalCheckFailedException"


class ConditionFailed(Exception):
    """A conditional write was refused: another writer changed the item first."""


def is_condition_failure(exc: botoexc.ClientError) -> bool:
    """Whether DynamoDB refused a write because its condition did not hold."""
    return str(exc.response.get("Error", {}).get("Code")) == _CONDITION_FAILED


def unavailable(table: str, operation: str, exc: Exception) -> BlacklistUnavailable:
    """The `BlacklistUnavailable` to raise (from `exc`) for a failed call."""
    if isinstance(exc, botoexc.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = (
            f"DynamoDB table {table!r}: {operation} failed, "
            f"{_describe(code)} ({code}: {error.get('Message', '')})"
        )
        return BlacklistUnavailable(message)
    if isinstance(exc, botoexc.NoCredentialsError | botoexc.PartialCredentialsError):
        kind = "no usable AWS credentials"
    elif isinstance(exc, botoexc.ConnectionError | botoexc.HTTPClientError):
        kind = "endpoint unreachable or timed out"
    else:
        kind = "client error"
    return BlacklistUnavailable(f"DynamoDB table {table!r}: {operation} failed, {kind} ({exc})")


def contended(table: str, what: str) -> BlacklistUnavailable:
    """The error when `what` kept changing under `MAX_WRITE_ATTEMPTS` optimistic writes."""
    message = (
        f"DynamoDB table {table!r}: {what} kept changing; "
        f"gave up after {MAX_WRITE_ATTEMPTS} attempts"
    )
    return BlacklistUnavailable(message)


def _describe(code: str) -> str:
    if code in _THROTTLING_CODES:
        return "throttled"
    if code == "ResourceNotFoundException":
        return "table not found"
    if code in _CREDENTIAL_CODES:
        return "credentials or permissions rejected"
    return "service error"
