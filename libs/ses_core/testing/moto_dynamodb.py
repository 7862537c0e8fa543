"""moto helpers for DynamoDB blacklist tests and benchmarks.

`create_blacklist_table` makes a table with exactly the original service's schema (string hash
key `email`, on-demand billing), so every test also proves compatibility with existing tables.
`MotoServer` runs moto's HTTP server on a free loopback port (moto's default binds every
interface), for tests and benchmarks that want a real endpoint and real HTTP round trips.
"""

from __future__ import annotations

import logging
import urllib.request
from types import TracebackType
from typing import Any

from moto.server import ThreadedMotoServer

log = logging.getLogger(__name__)

#: Region every helper uses unless told otherwise.
TEST_REGION = "us-east-1"


def create_blacklist_table(client: Any, name: str = "blacklist") -> None:
    """Create `name` with the original schema (`email` S hash key) and wait until it exists."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "email", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "email", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 10}
    )


def create_api_key_table(client: Any, name: str = "keys") -> None:
    """Create the relay's API-key table (`api_key` S hash key), as `USE_APIKEY` reads it."""
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "api_key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "api_key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def dynamodb_client(
    *, endpoint_url: str | None = None, region: str = TEST_REGION, timeout: float = 5.0
) -> Any:
    """A boto3 DynamoDB client with dummy credentials (never real ones) and short timeouts."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 1, "mode": "standard"},
    )
    return boto3.client(
        "dynamodb",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def offline_client(region: str = TEST_REGION) -> Any:
    """A DynamoDB client with dummy credentials, to wrap in botocore's `Stubber`: the stubber
    answers every call, scripting what moto cannot give (throttling, unprocessed keys)."""
    import boto3

    return boto3.client(
        "dynamodb",
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class MotoServer:
    """moto's threaded HTTP server on 127.0.0.1 and a free port; a context manager.

    Attributes:
        endpoint_url: `http://127.0.0.1:<port>` once started.
    """

    def __init__(self) -> None:
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint_url = ""

    def start(self) -> MotoServer:
        # werkzeug logs every request at INFO on stderr; tests and benchmarks want quiet.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        log.debug("moto server listening on %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every resource (moto's state is process-wide)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def client(self, region: str = TEST_REGION) -> Any:
        """A DynamoDB client for this server."""
        return dynamodb_client(endpoint_url=self.endpoint_url, region=region)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
