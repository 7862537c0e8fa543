"""Where the CLI gets its AWS clients: one seam, so tests can hand in moto or stubbed clients.

boto3 is imported only when a command really talks to AWS, so `--sqlite` runs and `--help` stay
fast and work without boto3's configuration.
"""

from __future__ import annotations

from typing import Any, Protocol

#: Operators run the CLI interactively: fail within seconds when AWS is unreachable, and let
#: botocore's "standard" mode retry throttling (SES allows about one suppression call a second).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 20.0
MAX_ATTEMPTS = 5


class AwsClients(Protocol):
    """Builds boto3 clients."""

    def client(self, service: str, region: str | None) -> Any:
        """A boto3 client for `service` ("dynamodb", "sesv2") in `region` (None: default)."""
        ...


class Boto3Clients:
    """Real boto3 clients with short timeouts and bounded retries."""

    def client(self, service: str, region: str | None) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        )
        return boto3.client(service, region_name=region, config=config)
