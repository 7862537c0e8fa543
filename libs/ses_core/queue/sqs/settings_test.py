"""SqsSpoolSettings' limits, the clients `from_config` builds, and the one-line error texts."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from ses_core.queue.sqs import SQS_MAX_DELAY, SqsQueueAdmin, SqsSpool, SqsSpoolSettings
from ses_core.queue.sqs._aws import describe, unavailable
from ses_core.testing.moto_sqs import DUMMY_CREDENTIALS

SETTINGS = SqsSpoolSettings(queue_url="https://sqs.example/1/q", bucket="bodies")


def test_defaults_keep_sqs_limits_and_a_third_of_the_visibility_between_extensions() -> None:
    """Defaults: 60 s visibility extended every 20 s, 2 s long poll, 900 s delay cap."""
    assert (SETTINGS.visibility_timeout, SETTINGS.wait_time) == (60, 2)
    assert SETTINGS.heartbeat_every == 20
    assert SETTINGS.max_delay == SQS_MAX_DELAY == 900
    assert attrs.evolve(SETTINGS, heartbeat_interval=1.5).heartbeat_every == 1.5


@pytest.mark.parametrize(
    "changes",
    [
        {"queue_url": ""},
        {"bucket": ""},
        {"visibility_timeout": 0},
        {"visibility_timeout": 43201},
        {"wait_time": 21},
        {"max_delay": 901},
        {"threads": 0},
        {"unavailable_cooldown": -1},
    ],
)
def test_values_sqs_would_refuse_are_refused_at_once(changes: dict[str, Any]) -> None:
    """Out-of-range settings fail when the spool is configured, not at the first call."""
    with pytest.raises(ValueError):
        attrs.evolve(SETTINGS, **changes)


async def test_from_config_builds_clients_for_the_region_and_endpoint() -> None:
    """from_config makes no call; its clients use the given region and endpoint."""
    credentials = {k: v for k, v in DUMMY_CREDENTIALS.items() if k != "region_name"}
    spool = SqsSpool.from_config(
        queue_url="http://127.0.0.1:9/1/q",
        bucket="bodies",
        region="eu-west-1",
        endpoint_url="http://127.0.0.1:9",
        credentials=credentials,
        visibility_timeout=120,
    )
    assert spool.settings.visibility_timeout == 120
    assert spool._queue._client.meta.region_name == "eu-west-1"
    assert spool._bodies.client.meta.endpoint_url == "http://127.0.0.1:9"
    await spool.aclose()
    admin = SqsQueueAdmin.from_config(
        queue_url="q", bucket="b", region="eu-west-1", credentials=credentials
    )
    assert admin.settings.prefix == "ses-relay/"


def test_errors_read_as_one_line_naming_service_operation_and_code() -> None:
    """ClientError, connection and credential failures become short, single-line reasons."""
    denied = ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not\nallowed"}}, "PutObject"
    )
    assert str(unavailable("S3", "PutObject", denied)) == (
        "S3 PutObject failed: AccessDenied: not allowed"
    )
    down = EndpointConnectionError(endpoint_url="https://sqs.example")
    assert describe(down).startswith("endpoint unreachable or timed out")
    assert describe(NoCredentialsError()) == "no usable AWS credentials"
    long = ClientError({"Error": {"Code": "X", "Message": "y" * 1000}}, "Op")
    assert len(describe(long)) == 300 and describe(long).endswith("...")
    assert describe(ValueError("odd")) == "ValueError: odd"
