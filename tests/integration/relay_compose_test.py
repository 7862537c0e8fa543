"""A relay process with docker/compose.yaml's settings refuses a recipient in the DynamoDB table.

The image once set `RELAY_BLACKLIST_SQLITE`, so compose's `USE_BLACKLIST` + `DYNAMODB_TABLE`
were ignored. Here the relay runs as a process (`python -m relay.main`) with compose's
environment, the endpoints that cannot exist here pointed at the loopback stand-ins
(`tests.support.image_standins`: the STARTTLS+AUTH upstream, a real redis-server, moto with the
table holding one address), plus the image's own `ENV` lines read from the Dockerfile. The same
scenario runs against the built image in `docker/check-image.sh`.
"""

from __future__ import annotations

import json
import re
import smtplib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_standins import compose_environment, relay_environment, standins
from tests.support.relay_harness import RelayProcess

DOCKER = next(
    (p for p in (Path("docker"), Path(__file__).parents[2] / "docker") if p.is_dir()), None
)


def dockerfile_environment(text: str) -> dict[str, str]:
    """The `ENV` instruction's `KEY=value` pairs (one instruction, continued lines)."""
    match = re.search(r"^ENV ((?:.*\\\n)*.*)$", text, re.MULTILINE)
    assert match is not None, "no ENV instruction in the Dockerfile"
    pairs = match.group(1).replace("\\\n", " ").split()
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[dict[str, object]]:
    """The stand-ins, with compose's blacklist table in compose's region."""
    assert DOCKER is not None
    compose = compose_environment((DOCKER / "compose.yaml").read_text())
    with standins(
        tmp_path / "standins", compose["DYNAMODB_TABLE"], compose["AWS_DEFAULT_REGION"]
    ) as up:
        up["environment"] = relay_environment(compose, up, str(up["ca_file"]))
        yield up


def test_image_env_has_no_blacklist_store() -> None:
    """The image selects no blacklist store of its own: compose's settings decide."""
    assert DOCKER is not None
    env = dockerfile_environment((DOCKER / "relay/Dockerfile").read_text())
    assert "SMTP_HOST" in env
    assert "RELAY_BLACKLIST_SQLITE" not in env


def test_compose_settings_refuse_a_recipient_blacklisted_in_dynamodb(
    running: dict[str, object], tmp_path: Path
) -> None:
    """550 5.1.1 for the address in the table, 250 for another; the log names the store."""
    assert DOCKER is not None
    image_env = dockerfile_environment((DOCKER / "relay/Dockerfile").read_text())
    env: dict[str, str] = {
        **image_env,
        **running["environment"],  # type: ignore[dict-item]
        "RELAY_LOCAL_OUTBOX": str(tmp_path / "outbox"),
        # The image's /var/lib/ses-relay/spool does not exist on this host.
        "RELAY_SPOOL_DIR": str(tmp_path / "spool"),
        "RELAY_LOG_FORMAT": "json",
    }
    # The harness moves both listeners to loopback ports of its choosing.
    with RelayProcess(env, log_path=tmp_path / "relay.log", ops_endpoint=True) as process:
        url = f"http://127.0.0.1:{process.metrics_port}/readyz"
        with urllib.request.urlopen(url, timeout=10) as ready:  # upstream, Redis, DynamoDB
            assert ready.status == 200
        with smtplib.SMTP("127.0.0.1", process.port, timeout=20) as client:
            client.ehlo()
            client.mail("app@example.com")
            code, text = client.rcpt(str(running["blacklisted"]))
            assert (code, text[:5]) == (550, b"5.1.1"), (code, text)
            assert client.rcpt("someone@example.org")[0] == 250
            code, _ = client.data(b"Subject: compose\r\nMessage-ID: <c@example.com>\r\n\r\nhi\r\n")
            assert code == 250
        process.terminate()
        assert process.wait(30) == 0
        messages = [json.loads(line).get("msg", "") for line in process.log_text().splitlines()]
    assert "blacklist: DynamoDB table ses-blacklist" in messages
