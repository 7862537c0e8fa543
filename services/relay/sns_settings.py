"""The settings of the relay's optional SNS HTTPS endpoint (`RELAY_SNS_*`), read and checked.

Kept apart from `relay.config` so that the configuration stays light: the endpoint itself
(`relay.sns_endpoint`, `relay.sns_http`) pulls in the signature verifier and is imported only
when the endpoint is on. On by `RELAY_SNS_LISTEN` alone; then the certificate, the key and the
topic allowlist are required, since an open endpoint that accepted any topic would let anyone
with an AWS account blacklist addresses through a topic of their own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import attrs

from relay import variables as v
from relay._env import ConfigError, EnvReader

#: arn:<partition>:sns:<region>:<account>:<topic name>
_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z]{2}(?:-[a-z]+)+-\d+:\d{12}:[\w.-]{1,256}")


@attrs.frozen
class SnsSettings:
    """Where the endpoint listens, its TLS files, and the only topics it accepts."""

    host: str
    port: int
    cert_path: Path
    key_path: Path
    topic_arns: frozenset[str]


def read_sns_settings(environ: Mapping[str, str]) -> SnsSettings | None:
    """The endpoint's settings, None when `RELAY_SNS_LISTEN` is unset; ConfigError if invalid."""
    env = EnvReader(environ)
    # Every variable is read even when the endpoint is off: the configuration reports all it reads.
    listen = env.text(v.RELAY_SNS_LISTEN)
    paths = {
        variable: env.path(variable) for variable in (v.RELAY_SNS_CERT_PATH, v.RELAY_SNS_KEY_PATH)
    }
    topic_text = str(env.text(v.RELAY_SNS_TOPIC_ARNS))
    if listen is None:
        return None
    host, port = _host_port(listen)
    files = []
    for variable, path in paths.items():
        if path is None:
            raise ConfigError(f"{variable.name}: required when RELAY_SNS_LISTEN is set")
        if not path.is_file():
            raise ConfigError(f"{variable.name}: no such file: {path}")
        files.append(path)
    topics = frozenset(item.strip() for item in topic_text.split(",") if item.strip())
    if not topics:
        message = (
            f"{v.RELAY_SNS_TOPIC_ARNS.name}: required when RELAY_SNS_LISTEN is set "
            "(the SNS topics whose deliveries are accepted)"
        )
        raise ConfigError(message)
    for topic in sorted(topics):
        if not _TOPIC_ARN.fullmatch(topic):
            raise ConfigError(f"{v.RELAY_SNS_TOPIC_ARNS.name}: not an SNS topic ARN: {topic!r}")
    return SnsSettings(host, port, files[0], files[1], topics)


def _host_port(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`; port 0 binds an ephemeral port (tests)."""
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        message = f"{v.RELAY_SNS_LISTEN.name}: expected host:port, got {text!r}"
        raise ConfigError(message)
    return host, int(port_text)
