"""The API upstream (`RELAY_UPSTREAM=api`): the SES v2 sender and the region it and the quota
poller use. Kept apart from `relay.wiring` so the choice costs wiring two lines.

The region is, in order: RELAY_SES_REGION; the region of an `email-smtp.<region>.amazonaws.com`
AWS_SMTP_HOST (the quota poller on the SMTP path); boto3's own settings (AWS_DEFAULT_REGION, the
profile); AWS_REGION, which Lambda and ECS set and boto3 does not read. Credentials and the
endpoint (`AWS_ENDPOINT_URL_SESV2`, for VPC endpoints) are boto3's business alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from relay.config import ConfigError, RelayConfig
from ses_core.ratelimit import RateLimiter
from ses_core.sesapi import SesApiSettings

if TYPE_CHECKING:  # boto3 is imported only when the API upstream is chosen
    from ses_core.sesapi.client import SesApiSender

log = logging.getLogger(__name__)

NO_REGION = (
    "RELAY_SES_REGION: no AWS region configured for the SES API (set RELAY_SES_REGION, "
    "AWS_REGION or AWS_DEFAULT_REGION)"
)


def ses_region(config: RelayConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The SES API's region for `config` (see the module docstring), or None when none is set."""
    import boto3

    from ses_core.ratelimit.ses_quota import region_from_smtp_host

    smtp_region = None if config.upstream == "api" else region_from_smtp_host(config.upstream_host)
    return (
        config.ses_region
        or smtp_region
        or boto3.session.Session().region_name
        or environ.get("AWS_REGION")
        or None
    )


def build_api_sender(config: RelayConfig, *, limiter: RateLimiter | None) -> SesApiSender:
    """The SES v2 sender: RELAY_POOL_SIZE calls in flight, RELAY_UPSTREAM_TIMEOUT per call, the
    default configuration set; a `ConfigError` naming the settings when no region is known."""
    from ses_core.sesapi.client import SesApiSender

    region = ses_region(config)
    if region is None:
        raise ConfigError(NO_REGION)
    settings = SesApiSettings(
        region=region,
        configuration_set=config.configuration_set,
        concurrency=config.pool_size,
        timeout=config.upstream_timeout,
    )
    sender = SesApiSender(settings, limiter=limiter)
    log.info(
        "upstream: SES v2 API in %s, %d calls in flight, configuration set %s",
        region,
        settings.concurrency,
        settings.configuration_set or "(none)",
    )
    return sender
