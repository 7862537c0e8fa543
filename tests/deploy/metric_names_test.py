"""Every metric the alert rules and the dashboard read is one a running relay really exposes.

A relay process runs as deployed (`python -m relay.main`, configured by environment) in queue
mode with the local spool and the SQLite blacklist, delivering to the scripted SES SMTP stand-in,
with `SES_RATE_LIMIT=auto` reading the account (sending state, daily quota) from the SES v2 stub.
After some traffic (accepted mail, a blacklisted recipient) its `/metrics` must name every
`relay_...` metric of deploy/prometheus/ses-relay.rules.yaml and deploy/grafana/ses-relay.json.
The metrics only the shared spool has are checked on a second relay with `RELAY_SPOOL=sqs`
(moto's server for SQS and S3, a real redis-server for the shared rate).
A family declared without samples yet (a labelled counter nobody incremented) counts as exposed:
its samples appear with the first event, under the names its type gives them.
"""

from __future__ import annotations

import smtplib
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ses_core.blacklist import BlacklistEntry, BlacklistReason
from ses_core.blacklist.sqlite import SqliteBlacklist
from ses_core.testing.certs import TestCertificates
from ses_core.testing.moto_dynamodb import MotoServer
from ses_core.testing.moto_sqs import create_spool_resources
from ses_core.testing.redis_server import RedisServer
from ses_core.testing.sesv2_stub import SesV2Stub
from ses_core.testing.upstream import SmtpUpstream
from tests.deploy.manifests import used_metric_names
from tests.support.relay_harness import RelayProcess, upstream_environ

#: Metrics only the shared (SQS + S3) spool exposes (issue 16): not expected from a local spool.
SQS_SPOOL_ONLY = frozenset({"relay_sqs_dead_letter_messages"})
#: The sample names each metric type produces (prometheus_client's exposition).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}
BLACKLISTED = "bounced@example.org"
MESSAGES = 3


def exposed_names(exposition: str) -> set[str]:
    """Every metric and sample name an exposition declares or carries."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def scrape(relay: RelayProcess) -> str:
    """GET /metrics of the relay."""
    with urllib.request.urlopen(f"http://127.0.0.1:{relay.metrics_port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one sample (0 when absent)."""
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                return float(s.value)
    return 0.0


@pytest.fixture(scope="module")
def relay(
    threaded_upstream: SmtpUpstream,
    certificates: TestCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RelayProcess]:
    """A queue-mode relay with a blacklist, its quota read from the SES v2 stub."""
    workdir = tmp_path_factory.mktemp("relay-metrics")
    with SqliteBlacklist(workdir / "blacklist.sqlite3") as store:
        store.put(BlacklistEntry.manual(BLACKLISTED, reason=BlacklistReason.BOUNCE))
    with SesV2Stub(max_send_rate=50.0) as ses:
        environ = {
            **upstream_environ(threaded_upstream, certificates.ca_file),
            "SES_RATE_LIMIT": "auto",
            "AWS_ENDPOINT_URL_SESV2": ses.url,
            "AWS_ENDPOINT_URL_SES": ses.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "RELAY_DELIVERY": "queue",
            "RELAY_SPOOL": "local",
            "RELAY_SPOOL_DIR": str(workdir / "spool"),
            "RELAY_SPOOL_MIN_FREE": "1MiB",
            "RELAY_BLACKLIST_SQLITE": str(workdir / "blacklist.sqlite3"),
            "RELAY_BOUNCE_FROM": "bounces@example.com",
        }
        with RelayProcess(environ, log_path=workdir / "relay.log", ops_endpoint=True) as process:
            yield process


@pytest.fixture(scope="module")
def exposition(relay: RelayProcess) -> str:
    """/metrics after a few messages (one recipient blacklisted) were accepted and delivered."""
    with smtplib.SMTP("127.0.0.1", relay.port, timeout=30) as client:
        for number in range(MESSAGES):
            recipients = [f"r{number}@example.org"] + ([BLACKLISTED] if number == 0 else [])
            body = (
                f"Subject: metrics {number}\r\nMessage-ID: <m{number}@example.com>\r\n\r\nHi.\r\n"
            )
            refused = client.sendmail("app@example.com", recipients, body.encode())
            assert set(refused) == ({BLACKLISTED} if number == 0 else set())
    deadline = time.monotonic() + 60
    text = scrape(relay)
    while sample(text, "relay_queue_deliveries_total", outcome="accepted") < MESSAGES:
        assert time.monotonic() < deadline, f"not delivered in 60 s:\n{relay.log_tail()}"
        time.sleep(0.2)
        text = scrape(relay)
    return text


def test_the_rules_and_the_dashboard_use_the_relay_metrics() -> None:
    """The list checked below is not empty: it has the issue's metrics in it."""
    used = used_metric_names()
    assert {
        "relay_queue_oldest_age_seconds",
        "relay_queue_recipients",
        "relay_ses_daily_quota_used_ratio",
        "relay_limiter_wait_seconds_bucket",
        "relay_upstream_latency_seconds_bucket",
        "relay_blacklist_cache_hit_ratio",
    } <= used


def test_every_metric_used_is_exposed_by_a_queue_mode_relay(exposition: str) -> None:
    """Each name the rules and the dashboard read appears on the relay's /metrics."""
    assert sample(exposition, "relay_blacklist_hits_total") >= 1
    missing = sorted(used_metric_names() - SQS_SPOOL_ONLY - exposed_names(exposition))
    assert not missing, f"used by the alerts or the dashboard but not exposed: {missing}"


def test_exposed_names_follow_the_exposition_types() -> None:
    """Counters are read as `_total`, histograms as `_bucket`/`_sum`/`_count`."""
    text = (
        "# HELP relay_x_total x\n# TYPE relay_x_total counter\n"
        "# HELP relay_h h\n# TYPE relay_h histogram\n"
        'relay_h_bucket{le="+Inf"} 0.0\nrelay_h_count 0.0\nrelay_h_sum 0.0\n'
    )
    names = exposed_names(text)
    assert {"relay_x_total", "relay_h_bucket", "relay_h_sum", "relay_h_count"} <= names
    assert "relay_x_total_total" not in names and "relay_y" not in names


@pytest.fixture(scope="module")
def sqs_relay(
    threaded_upstream: SmtpUpstream,
    certificates: TestCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RelayProcess]:
    """A queue-mode relay on the shared spool (SQS + S3 on moto's server, Redis)."""
    workdir = tmp_path_factory.mktemp("relay-sqs-metrics")
    with MotoServer() as moto, RedisServer() as redis:
        resources = create_spool_resources(moto.endpoint_url)
        environ = {
            **upstream_environ(threaded_upstream, certificates.ca_file),
            "SES_RATE_LIMIT": "100",
            "AWS_ENDPOINT_URL": moto.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "REDIS_URL": redis.url,
            "RELAY_DELIVERY": "queue",
            "RELAY_SPOOL": "sqs",
            "RELAY_SQS_QUEUE_URL": resources.queue_url,
            "RELAY_S3_BUCKET": resources.bucket,
            "RELAY_BLACKLIST_SQLITE": str(workdir / "blacklist.sqlite3"),
        }
        with RelayProcess(environ, log_path=workdir / "relay.log", ops_endpoint=True) as process:
            yield process


def test_shared_spool_metrics_are_exposed_by_an_sqs_relay(sqs_relay: RelayProcess) -> None:
    """With RELAY_SPOOL=sqs, after a delivery, /metrics names the shared-spool-only metrics."""
    with smtplib.SMTP("127.0.0.1", sqs_relay.port, timeout=30) as client:
        client.sendmail("app@example.com", ["sqs@example.org"], b"Subject: sqs\r\n\r\nHi.\r\n")
    deadline = time.monotonic() + 60
    text = scrape(sqs_relay)
    while sample(text, "relay_queue_deliveries_total", outcome="accepted") < 1:
        assert time.monotonic() < deadline, f"not delivered in 60 s:\n{sqs_relay.log_tail()}"
        time.sleep(0.2)
        text = scrape(sqs_relay)
    missing = sorted(SQS_SPOOL_ONLY - exposed_names(text))
    assert not missing, f"used by the alerts or the dashboard but not exposed: {missing}"
