"""The Lambda's configuration, read once per container from its environment.

The variable names (`SES_REGION`, `EMAIL_FROM`, `EMAIL_TO`, `DYNAMODB_TABLE`) are the ones existing
deployments already set. Everything is validated at cold start: a typo in the alert address must
fail the function's init phase loudly, not surface months later when the alert that should have
reported an outage cannot be sent. The optional `SOFT_BOUNCE_THRESHOLDS` (e.g.
`Transient/General=3,Transient/MailboxFull=5`) also blacklists an address once it has collected
that many bounces of a type/subtype the default policy only reports; a misspelt subtype would
silently never match, so only the Transient and Undetermined subtypes SES documents are accepted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import attrs

from ses_core.addresses import EmailAddress
from ses_core.errors import InvalidAddress
from ses_core.feedback import DEFAULT_POLICY, BounceThreshold, SuppressionPolicy

# Region names: `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`, `il-central-1`.
_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
# DynamoDB table names: 3-255 characters of letters, digits, `_`, `-` and `.`.
_TABLE_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
THRESHOLDS_VARIABLE = "SOFT_BOUNCE_THRESHOLDS"
#: Bounce types and subtypes a threshold may name (SES's documented non-Permanent ones).
SOFT_BOUNCE_SUBTYPES: dict[str, frozenset[str]] = {
    "Transient": frozenset(
        {"General", "MailboxFull", "MessageTooLarge", "ContentRejected", "AttachmentRejected"}
    ),
    "Undetermined": frozenset({"Undetermined"}),
}
_THRESHOLD_RE = re.compile(r"^([A-Za-z]+)/([A-Za-z]+)=(\d{1,6})$")


class LambdaConfigError(ValueError):
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
        soft_bounce_thresholds: bounce types/subtypes blacklisted after N occurrences
            (`SOFT_BOUNCE_THRESHOLDS`, optional; none by default).
    """

    ses_region: str
    email_from: str
    email_to: tuple[str, ...]
    dynamodb_table: str
    soft_bounce_thresholds: tuple[BounceThreshold, ...] = ()

    @property
    def suppression_policy(self) -> SuppressionPolicy:
        """The default policy plus the configured thresholds."""
        return policy_with_thresholds(self.soft_bounce_thresholds)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> LambdaConfig:
        """Read and validate the variables; raise `LambdaConfigError` naming the first bad one."""
        region = _required(environ, "SES_REGION")
        if not _REGION_RE.match(region):
            raise LambdaConfigError("SES_REGION", f"{region!r} is not an AWS region name")
        email_from = _address(_required(environ, "EMAIL_FROM"), "EMAIL_FROM")
        recipients = tuple(part.strip() for part in _required(environ, "EMAIL_TO").split(";"))
        email_to = tuple(_address(part, "EMAIL_TO") for part in recipients if part)
        if not email_to:
            raise LambdaConfigError("EMAIL_TO", "no address between the semicolons")
        table = _required(environ, "DYNAMODB_TABLE")
        if not _TABLE_RE.match(table):
            message = f"{table!r} is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ - .)"
            raise LambdaConfigError("DYNAMODB_TABLE", message)
        return cls(
            ses_region=region,
            email_from=email_from,
            email_to=email_to,
            dynamodb_table=table,
            soft_bounce_thresholds=parse_thresholds(environ.get(THRESHOLDS_VARIABLE, "")),
        )


def policy_with_thresholds(thresholds: tuple[BounceThreshold, ...]) -> SuppressionPolicy:
    """The default policy plus `thresholds`: the Lambda's, and the CLI's when it replays."""
    policy = DEFAULT_POLICY
    for rule in thresholds:
        policy = policy.with_threshold(rule.bounce_type, rule.bounce_subtype, rule.occurrences)
    return policy


def parse_thresholds(text: str) -> tuple[BounceThreshold, ...]:
    """Parse `Type/Subtype=N` rules separated by commas (`""` = none); `LambdaConfigError` if bad.

    N is at least 1 (1 blacklists at the first bounce); a type/subtype may appear once.
    """
    rules: list[BounceThreshold] = []
    seen: set[tuple[str, str]] = set()
    for part in text.split(","):
        rule = part.strip().replace(" ", "")
        if not rule:
            continue
        match = _THRESHOLD_RE.match(rule)
        if match is None:
            message = f"{part.strip()[:100]!r} is not Type/Subtype=N (e.g. Transient/General=3)"
            raise LambdaConfigError(THRESHOLDS_VARIABLE, message)
        bounce_type, subtype, number = match.group(1), match.group(2), int(match.group(3))
        if bounce_type == "Permanent":
            message = f"{rule!r}: Permanent bounces are always blacklisted; no threshold applies"
            raise LambdaConfigError(THRESHOLDS_VARIABLE, message)
        subtypes = SOFT_BOUNCE_SUBTYPES.get(bounce_type)
        if subtypes is None:
            known = ", ".join(sorted(SOFT_BOUNCE_SUBTYPES))
            message = f"{rule!r}: unknown bounce type {bounce_type!r} (one of {known})"
            raise LambdaConfigError(THRESHOLDS_VARIABLE, message)
        if subtype not in subtypes:
            known = ", ".join(sorted(subtypes))
            message = f"{rule!r}: unknown {bounce_type} subtype {subtype!r} (one of {known})"
            raise LambdaConfigError(THRESHOLDS_VARIABLE, message)
        if number < 1:
            message = f"{rule!r}: the number of occurrences must be at least 1"
            raise LambdaConfigError(THRESHOLDS_VARIABLE, message)
        if (bounce_type, subtype) in seen:
            message = f"{bounce_type}/{subtype} is given more than once"
            raise LambdaConfigError(THRESHOLDS_VARIABLE, message)
        seen.add((bounce_type, subtype))
        rules.append(BounceThreshold(bounce_type, subtype, number))
    return tuple(rules)


def _required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise LambdaConfigError(name, "is not set (required)")
    return value


def _address(text: str, variable: str) -> str:
    # SES accepts `"Name" <a@b>` as a source; keep what the operator wrote once it parses.
    try:
        EmailAddress.parse(text)
    except InvalidAddress as exc:
        raise LambdaConfigError(variable, str(exc)) from None
    return text
