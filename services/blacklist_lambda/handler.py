"""Lambda entry point: `handler(event, context)`, wired once per container from the environment.

Inside Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set) the module wires itself at import: logging,
`LambdaConfig`, the DynamoDB blacklist and the SES client (boto3 is imported only then). A bad
variable thus fails the container's init phase with a message naming it, and the clients are
built on init's clock rather than the first invocation's. Elsewhere (tests, tooling, benchmarks)
importing is cheap and reads no environment; the first invocation wires instead. `make_handler`
wires the same thing from explicit parts.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from blacklist_lambda.alert import AdminAlerter, SesSendEmailClient
from blacklist_lambda.config import LambdaConfig
from blacklist_lambda.processor import NotificationProcessor
from ses_core.blacklist import BlacklistWriter
from ses_core.feedback import SuppressionPolicy
from ses_core.version import VERSION

log = logging.getLogger(__name__)

Handler = Callable[[Mapping[str, Any], Any], "dict[str, Any] | None"]

#: Alerts go out while something is already failing: give up quickly rather than eat the
#: function's timeout.
SES_CONNECT_TIMEOUT = 3.0
SES_READ_TIMEOUT = 10.0

_lock = threading.Lock()
_built: Handler | None = None


def make_handler(
    config: LambdaConfig,
    blacklist: BlacklistWriter,
    ses_client: SesSendEmailClient,
    *,
    policy: SuppressionPolicy | None = None,
) -> Handler:
    """A handler over the given blacklist and SES client (boto3 `ses`), configured by `config`.

    `policy` defaults to the config's (the default policy plus `SOFT_BOUNCE_THRESHOLDS`).
    """
    alerter = AdminAlerter(ses_client, sender=config.email_from, recipients=config.email_to)
    chosen = config.suppression_policy if policy is None else policy
    return NotificationProcessor(blacklist, alerter, table=config.dynamodb_table, policy=chosen)


def build_from_environ(environ: Mapping[str, str] = os.environ) -> Handler:
    """Validate the configuration and build the real DynamoDB and SES clients."""
    config = LambdaConfig.from_environ(environ)
    import boto3
    from botocore.config import Config

    from ses_core.blacklist.dynamodb import DynamoDBBlacklist

    ses_client = boto3.client(
        "ses",
        region_name=config.ses_region,
        config=Config(
            connect_timeout=SES_CONNECT_TIMEOUT,
            read_timeout=SES_READ_TIMEOUT,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )
    # The table lives in the function's own region (AWS_REGION, set by the Lambda runtime).
    blacklist = DynamoDBBlacklist.from_table_name(config.dynamodb_table)
    log.info(
        "blacklist Lambda %s ready: table %s, alerts from %s to %d recipient(s) via SES in %s, "
        "soft bounce thresholds: %s",
        VERSION,
        config.dynamodb_table,
        config.email_from,
        len(config.email_to),
        config.ses_region,
        ", ".join(
            f"{rule.bounce_type}/{rule.bounce_subtype}={rule.occurrences}"
            for rule in config.soft_bounce_thresholds
        )
        or "none",
    )
    return make_handler(config, blacklist, ses_client)


def _configure_logging(environ: Mapping[str, str]) -> None:
    # The Lambda runtime installs its own handler on the root logger; locally there is none.
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    root.setLevel(environ.get("LOG_LEVEL", "INFO").upper())


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any] | None:
    """The Lambda handler (`lambda_function.handler` in the packaged zip)."""
    return _wired()(event, context)


def _wired() -> Handler:
    """The container's handler, wired from the environment on first use."""
    global _built
    built = _built
    if built is None:
        with _lock:
            if _built is None:
                _configure_logging(os.environ)
                try:
                    _built = build_from_environ(os.environ)
                except ValueError:
                    # LambdaConfigError names the variable; log it so the first line in CloudWatch
                    # says what to fix, then fail the init phase (or invocation) with it.
                    log.exception("invalid configuration")
                    raise
            built = _built
    return built


def reset() -> None:
    """Forget the wiring (tests that change the environment between calls)."""
    global _built
    with _lock:
        _built = None


def running_in_lambda(environ: Mapping[str, str] = os.environ) -> bool:
    """True inside the Lambda runtime, which always sets `AWS_LAMBDA_FUNCTION_NAME`."""
    return bool(environ.get("AWS_LAMBDA_FUNCTION_NAME"))


# Validate and wire at import inside Lambda, so a misconfigured function fails its init phase.
if running_in_lambda():
    _wired()
