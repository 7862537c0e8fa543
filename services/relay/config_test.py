"""Tests for relay.config: every variable parsed, every bad value named in one line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from relay import variables, variables_queue
from relay.auth import hash_password
from relay.config import ENVIRONMENT_VARIABLES, ConfigError, RelayConfig, unknown_variables
from relay.queue_settings import QueueSettings
from relay.variables import VARIABLES, Variable

AWS = {"AWS_SMTP_HOST": "email-smtp.eu-west-1.amazonaws.com"}


def tls_files(folder: Path) -> dict[str, str]:
    """SSL_CERT_PATH/SSL_KEY_PATH pointing at (dummy) existing files."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_text("cert")
    key.write_text("key")
    return {"SSL_CERT_PATH": str(cert), "SSL_KEY_PATH": str(key)}


def test_empty_environment_is_local_mode_on_loopback() -> None:
    """With nothing set the relay runs in local mode on 127.0.0.1:1025 with a SQLite blacklist."""
    config = RelayConfig.from_environ({})
    assert config.local_mode
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 1025)
    assert config.local_outbox == Path("outbox")
    assert config.blacklist_sqlite == Path("blacklist.sqlite3")
    assert config.rate_limit == 10.0
    assert config.metrics_port == 9125


def test_existing_deployment_variables_keep_their_meaning(tmp_path: Path) -> None:
    """The variables existing deployments set map onto the listener, upstream, rate and tables."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    config = RelayConfig.from_environ(
        {
            **AWS,
            "AWS_SMTP_PORT": "465",
            "AWS_SMTP_USERNAME": "AKIA1",
            "AWS_SMTP_PASSWORD": "s3cret",
            "SMTP_HOST": "0.0.0.0",
            "SMTP_PORT": "2525",
            "SES_RATE_LIMIT": "14",
            "USE_BLACKLIST": "true",
            "DYNAMODB_TABLE": "bl",
            "USE_APIKEY": "1",
            "DYNAMODB_API_KEYS_TABLE": "keys",
            "ENABLE_SSL": "true",
            "SSL_CERT_PATH": str(cert),
            "SSL_KEY_PATH": str(key),
            "SERVER_FQDN": "smtp.example.com",
        }
    )
    assert not config.local_mode
    assert (config.upstream_host, config.upstream_port) == (AWS["AWS_SMTP_HOST"], 465)
    assert config.upstream_password == "s3cret"
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 2525)
    assert config.rate_limit == 14.0
    assert config.use_blacklist and config.dynamodb_table == "bl"
    assert config.blacklist_sqlite is None
    assert config.use_apikey and config.api_keys_table == "keys"
    assert config.implicit_tls and config.tls_cert_path == cert
    assert config.server_fqdn == "smtp.example.com"


def test_rate_auto_is_the_aws_default() -> None:
    """In AWS mode SES_RATE_LIMIT defaults to auto (None) and accepts `auto` explicitly."""
    assert RelayConfig.from_environ(AWS).rate_limit is None
    assert RelayConfig.from_environ({**AWS, "SES_RATE_LIMIT": "AUTO"}).rate_limit is None


def test_new_settings_are_parsed(tmp_path: Path) -> None:
    """The RELAY_* settings are parsed into typed values."""
    hashed = hash_password("pw", n=2)
    config = RelayConfig.from_environ(
        {
            **tls_files(tmp_path),
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "RELAY_MAX_WAIT": "12.5",
            "RELAY_ALLOWED_NETWORKS": "10.0.0.0/8, 192.168.1.7",
            "RELAY_ALLOWED_SENDER_DOMAINS": "Example.COM,bücher.de",
            "RELAY_AUTH_USERS": f"app:{hashed}",
            "RELAY_BLACKLIST_MODE": "drop",
            "RELAY_METRICS_PORT": "off",
            "RELAY_POOL_SIZE": "8",
            "RELAY_GRACE_PERIOD": "3",
            "RELAY_REDIS_UNAVAILABLE": "degrade",
        }
    )
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.max_wait == 12.5
    assert config.allowed_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    )
    assert config.allowed_sender_domains == ("example.com", "xn--bcher-kva.de")
    assert config.auth_users == (("app", hashed),) and config.auth_enabled
    assert config.blacklist_drop
    assert config.metrics_port is None
    assert config.pool_size == 8 and config.grace_period == 3.0 and config.redis_degrade


def test_blacklist_cache_settings_default_to_the_cache_defaults() -> None:
    """Unset, the cache keeps blacklisted answers 300 s, others 30 s, at most 100,000 of them."""
    config = RelayConfig.from_environ({})
    assert config.blacklist_cache_blacklisted_ttl == 300.0
    assert config.blacklist_cache_ttl == 30.0
    assert config.blacklist_cache_max_entries == 100_000


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"SMTP_PORT": "abc"}, "SMTP_PORT"),
        ({"SMTP_PORT": "70000"}, "SMTP_PORT"),
        ({"SES_RATE_LIMIT": "fast"}, "SES_RATE_LIMIT"),
        ({"SES_RATE_LIMIT": "0"}, "SES_RATE_LIMIT"),
        ({"SES_RATE_LIMIT": "auto"}, "SES_RATE_LIMIT"),
        ({**AWS, "USE_BLACKLIST": "true"}, "DYNAMODB_TABLE"),
        ({"USE_APIKEY": "yes"}, "DYNAMODB_API_KEYS_TABLE"),
        ({"USE_BLACKLIST": "maybe"}, "USE_BLACKLIST"),
        ({"ENABLE_SSL": "true"}, "ENABLE_SSL"),
        ({"SSL_CERT_PATH": "/nonexistent.pem"}, "SSL_KEY_PATH"),
        ({"SSL_CERT_PATH": "/nonexistent.pem", "SSL_KEY_PATH": "/n.pem"}, "SSL_CERT_PATH"),
        ({"RELAY_ALLOWED_NETWORKS": "10.0.0.0/33"}, "RELAY_ALLOWED_NETWORKS"),
        ({"RELAY_BLACKLIST_MODE": "bounce"}, "RELAY_BLACKLIST_MODE"),
        ({"RELAY_MAX_WAIT": "-1"}, "RELAY_MAX_WAIT"),
        ({"RELAY_MAX_WAIT": "inf"}, "RELAY_MAX_WAIT"),
        ({"RELAY_POOL_SIZE": "0"}, "RELAY_POOL_SIZE"),
        ({"RELAY_BLACKLIST_CACHE_TTL": "-1"}, "RELAY_BLACKLIST_CACHE_TTL"),
        ({"RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL": "-5"}, "RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL"),
        ({"RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL": "5m"}, "RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL"),
        ({"RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL": "nan"}, "RELAY_BLACKLIST_CACHE_BLACKLISTED_TTL"),
        ({"RELAY_BLACKLIST_CACHE_MAX_ENTRIES": "0"}, "RELAY_BLACKLIST_CACHE_MAX_ENTRIES"),
        ({"RELAY_BLACKLIST_CACHE_MAX_ENTRIES": "1e5"}, "RELAY_BLACKLIST_CACHE_MAX_ENTRIES"),
        ({"RELAY_LOCAL_SMTP_URL": "http://x"}, "RELAY_LOCAL_SMTP_URL"),
        ({"RELAY_LOG_LEVEL": "LOUD"}, "RELAY_LOG_LEVEL"),
        ({"RELAY_REDIS_UNAVAILABLE": "ignore"}, "RELAY_REDIS_UNAVAILABLE"),
        ({"RELAY_AUTH_USERS": "a:" + hash_password("pw", n=2)}, "SSL_CERT_PATH"),
        ({**AWS, "AWS_SMTP_USERNAME": "AKIA1"}, "AWS_SMTP_PASSWORD"),
        ({**AWS, "AWS_SMTP_PASSWORD": "pw"}, "AWS_SMTP_USERNAME"),
    ],
)
def test_invalid_values_name_the_variable(environ: dict[str, str], variable: str) -> None:
    """Each invalid setting raises ConfigError whose single line starts with the variable name."""
    with pytest.raises(ConfigError) as caught:
        RelayConfig.from_environ(environ)
    message = str(caught.value)
    assert message.startswith(f"{variable}:")
    assert "\n" not in message


def test_bad_auth_entry_never_echoes_the_secret() -> None:
    """A malformed RELAY_AUTH_USERS entry is reported by position, without its content."""
    with pytest.raises(ConfigError) as caught:
        RelayConfig.from_environ({"RELAY_AUTH_USERS": "app:plaintext-password"})
    assert "plaintext-password" not in str(caught.value)
    assert str(caught.value).startswith("RELAY_AUTH_USERS: entry 1")


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    """Passwords, credential hashes and URLs with credentials stay out of repr()."""
    hashed = hash_password("pw", n=2)
    config = RelayConfig.from_environ(
        {
            **tls_files(tmp_path),
            **AWS,
            "AWS_SMTP_USERNAME": "AKIA1",
            "AWS_SMTP_PASSWORD": "TOPSECRET",
            "REDIS_URL": "redis://:REDISPW@h:6379",
            "RELAY_AUTH_USERS": f"app:{hashed}",
        }
    )
    text = repr(config)
    assert "TOPSECRET" not in text and "REDISPW" not in text and hashed not in text


class RecordingEnviron(dict[str, str]):
    """An environment that records which variables were asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)


def test_table_lists_every_variable_read(tmp_path: Path) -> None:
    """The README table names every variable from_environ reads, each once, and all are read."""
    names = [row[0] for row in ENVIRONMENT_VARIABLES]
    assert len(names) == len(set(names))
    defined = [
        value
        for module in (variables, variables_queue)
        for value in vars(module).values()
        if isinstance(value, Variable)
    ]
    assert set(defined) == set(VARIABLES)
    environ = RecordingEnviron({**tls_files(tmp_path), **AWS, "SES_RATE_LIMIT": "1"})
    RelayConfig.from_environ(environ)
    # The shared spool's variables are read with RELAY_SPOOL=sqs (and RELAY_SPOOL_DIR is not).
    shared = RecordingEnviron(
        {
            **AWS,
            "SES_RATE_LIMIT": "1",
            "RELAY_SPOOL": "sqs",
            "RELAY_SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/q",
            "RELAY_S3_BUCKET": "b",
            "REDIS_URL": "redis://r",
        }
    )
    RelayConfig.from_environ(shared)
    assert environ.asked | shared.asked == set(names)
    assert all(len(row) == 4 and all(row) for row in ENVIRONMENT_VARIABLES)


def test_defaults_are_those_of_the_variables() -> None:
    """Unset variables give the defaults of a RelayConfig built in code, apart from those that
    RelayConfig documents (the ops endpoint, the greeting's host name, the spool in memory)."""
    from_environment = RelayConfig.from_environ({**AWS, "SES_RATE_LIMIT": "10"})
    in_code = RelayConfig(
        upstream_host=AWS["AWS_SMTP_HOST"],
        metrics_port=variables.RELAY_METRICS_PORT.default,
        server_fqdn=from_environment.server_fqdn,
        queue=QueueSettings(spool_dir=variables_queue.RELAY_SPOOL_DIR.default),
    )
    assert from_environment == in_code


def test_bounce_from_is_an_address_in_the_sender_allowlist() -> None:
    """RELAY_BOUNCE_FROM: validated at start as an address, and inside
    RELAY_ALLOWED_SENDER_DOMAINS when that is set (the relay sends as it)."""
    ok = {**AWS, "RELAY_BOUNCE_FROM": "bounces@example.com"}
    assert RelayConfig.from_environ(ok).bounce_from == "bounces@example.com"
    assert RelayConfig.from_environ(AWS).bounce_from is None
    restricted = {**ok, "RELAY_ALLOWED_SENDER_DOMAINS": "example.com"}
    assert RelayConfig.from_environ(restricted).bounce_from == "bounces@example.com"
    for environ in (
        {**AWS, "RELAY_BOUNCE_FROM": "not an address"},
        {**ok, "RELAY_ALLOWED_SENDER_DOMAINS": "other.example"},
    ):
        with pytest.raises(ConfigError, match="^RELAY_BOUNCE_FROM: "):
            RelayConfig.from_environ(environ)


def test_unknown_relay_variable_is_named_with_the_closest_known_name() -> None:
    """A mistyped RELAY_* name is reported with the known name it resembles; known names and
    other software's variables are not reported."""
    environ = {
        "RELAY_POOL_SZE": "8",
        "RELAY_POOL_SIZE": "4",
        "RELAY_ZZZZZZZZZZZZ": "1",
        "REDIS_URLS": "redis://x",
        "PATH": "/bin",
    }
    unknown = unknown_variables(environ)
    assert [(item.name, item.closest) for item in unknown] == [
        ("RELAY_POOL_SZE", "RELAY_POOL_SIZE"),
        ("RELAY_ZZZZZZZZZZZZ", None),
    ]
    assert "RELAY_POOL_SZE" in unknown[0].message and "RELAY_POOL_SIZE" in unknown[0].message
    config = RelayConfig.from_environ(environ)
    assert config.unknown_variables == tuple(unknown)
    assert config.pool_size == 4
    assert unknown_variables({variable.name: "x" for variable in VARIABLES}) == []
