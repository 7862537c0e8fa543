"""The Lambda's configuration, read once per container from its environment.

The variable names are the original service's (`SES_REGION`, `EMAIL_FROM`, `EMAIL_TO`,
`DYNAMODB_TABLE`), so an existing deployment keeps working. Everything is validated at cold start:
a typo in the alert address must fail the first invocation loudly, not surface months later when
the alert that should have reported an outage cannot be sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import attrs

from ses_core.addresses import EmailAddress
from ses_core.errors import InvalidAddress

# Region names: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`, `il-central-1`.
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# DynamoDB table names: 3-255 characters of letters, digits, `_`, `-` and `.`.
_TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


class ConfigError(ValueError):
    """A required environment variable is missing or malformed; the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@attrs.frozen
class LambdaConfig:
    """What the bounce/complaint Lambda needs to run.

    Attributes:
        ses_region: the region whose SES endpoint sends the admin alert (`SES_REGION`).
        email_from: the alert's sender, an SES-verified identity (`EMAIL_FROM`).
        email_to: the alert's recipients (`EMAIL_TO`, separated by semicolons).
        dynamodb_table: the blacklist table, keyed by the string attribute `email`
            (`DYNAMODB_TABLE`).
    """

    ses_region: str
    email_from: str
    email_to: tuple[str, ...]
    dynamodb_table: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> LambdaConfig:
        """Read and validate the four variables; raise `ConfigError` naming the first bad one."""
        region = _required(environ, "SES_REGION")
        if not _REGION_RE.match(region):
            raise ConfigError("SES_REGION", f"{region!r} is not an AWS region name")
        email_from = _address(_required(environ, "EMAIL_FROM"), "EMAIL_FROM")
        recipients = tuple(part.strip() for part in _required(environ, "EMAIL_TO").split(";"))
        email_to = tuple(_address(part, "EMAIL_TO") for part in recipients if part)
        if not email_to:
            raise ConfigError("EMAIL_TO", "no address between the semicolons")
        table = _required(environ, "DYNAMODB_TABLE")
        if not _TABLE_RE.match(table):
            message = f"{table!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ - .)"
            raise ConfigError("DYNAMODB_TABLE", message)
        return cls(
            ses_region=region, email_from=email_from, email_to=email_to, dynamodb_table=table
        )


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is not set (required)")
    return value


def _address(text: str, variable: str) -> str:
    # SES accepts `"Name" <a@b>` as a source; keep what the operator wrote once it parses.
    try:
        EmailAddress.parse(text)
    except InvalidAddress as exc:
        raise ConfigError(variable, str(exc)) from None
    return text
