"""Tests for the Lambda entry point: wiring from the environment, once, at init or first use.

What the wired processor does with events is tested in processor_test.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blacklist_lambda import handler as handler_module
from blacklist_lambda.config import LambdaConfig, LambdaConfigError
from blacklist_lambda.conftest import CONTEXT, REGION, SENDER, TABLE, soft_bounce
from blacklist_lambda.handler import make_handler, running_in_lambda
from ses_core.blacklist import InMemoryBlacklist
from ses_core.blacklist.dynamodb import DynamoDBBlacklist
from ses_core.feedback import DEFAULT_POLICY, BounceThreshold
from ses_core.testing import feedback_docs as fx

# -- module-level handler and configuration -----------------------------------------------------


@pytest.fixture
def fresh_handler() -> Iterator[None]:
    """Forget the container-wide wiring (and restore the root log level it sets) around the test."""
    root = logging.getLogger()
    level = root.level
    handler_module.reset()
    yield
    handler_module.reset()
    root.setLevel(level)


def test_module_handler_names_a_missing_variable(
    aws_env: None, fresh_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without configuration the first invocation fails with an error naming the variable."""
    for name in ("SES_REGION", "EMAIL_FROM", "EMAIL_TO", "DYNAMODB_TABLE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(LambdaConfigError, match="SES_REGION"):
        handler_module.handler(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)


def test_module_handler_builds_once_from_the_environment(
    aws: dict[str, Any], fresh_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module-level handler wires itself from the environment once and writes to the table."""
    monkeypatch.setenv("SES_REGION", REGION)
    monkeypatch.setenv("EMAIL_FROM", SENDER)
    monkeypatch.setenv("EMAIL_TO", "ops@example.com")
    monkeypatch.setenv("DYNAMODB_TABLE", TABLE)
    handler_module.handler(fx.lambda_sns_event(fx.bounce_with_dsn()), CONTEXT)
    built = handler_module._built
    handler_module.handler(fx.lambda_sns_event(fx.complaint_with_feedback()), CONTEXT)
    assert handler_module._built is built
    found = DynamoDBBlacklist(TABLE, client=aws["dynamodb"]).lookup_many(
        ["jane@example.com", "richard@example.com"]
    )
    assert sorted(found) == ["jane@example.com", "richard@example.com"]


def test_module_handler_reads_thresholds_from_the_environment(
    aws: dict[str, Any], fresh_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SOFT_BOUNCE_THRESHOLDS configures the cold-started handler's policy."""
    monkeypatch.setenv("SES_REGION", REGION)
    monkeypatch.setenv("EMAIL_FROM", SENDER)
    monkeypatch.setenv("EMAIL_TO", "ops@example.com")
    monkeypatch.setenv("DYNAMODB_TABLE", TABLE)
    monkeypatch.setenv("SOFT_BOUNCE_THRESHOLDS", "Transient/General=2")
    for n in range(2):
        handler_module.handler(fx.lambda_sns_event(soft_bounce(f"soft-{n}")), CONTEXT)
    entry = DynamoDBBlacklist(TABLE, client=aws["dynamodb"]).get("ooto@example.com")
    assert entry is not None and entry.count == 2


def test_module_handler_names_a_bad_threshold_variable(
    aws_env: None, fresh_handler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed SOFT_BOUNCE_THRESHOLDS fails the cold start with an error naming it."""
    monkeypatch.setenv("SES_REGION", REGION)
    monkeypatch.setenv("EMAIL_FROM", SENDER)
    monkeypatch.setenv("EMAIL_TO", "ops@example.com")
    monkeypatch.setenv("DYNAMODB_TABLE", TABLE)
    monkeypatch.setenv("SOFT_BOUNCE_THRESHOLDS", "Transient/General=three")
    with pytest.raises(LambdaConfigError, match="SOFT_BOUNCE_THRESHOLDS"):
        handler_module.handler(fx.lambda_sns_event(soft_bounce("soft-1")), CONTEXT)


#: Imports the handler module in a fresh interpreter (sys.path from argv[1]) and prints whether
#: the import wired it; a failing import exits non-zero with its traceback on stderr.
IMPORT_HANDLER = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
from blacklist_lambda import handler
print("wired" if handler._built is not None else "lazy")
"""
IMPORT_TIMEOUT = 60


def import_in_fresh_interpreter(
    tmp_path: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Import blacklist_lambda.handler in a new interpreter whose environment is only `variables`
    plus dummy AWS credentials (no AWS configuration files, no instance metadata)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,  # the Lambda runtime sets both
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        **variables,
    }
    # Absolute: Pants puts the source roots on sys.path relative to its sandbox, and the child
    # runs in tmp_path.
    path = json.dumps([os.path.abspath(entry) for entry in sys.path if entry])
    return subprocess.run(
        [sys.executable, "-c", IMPORT_HANDLER, path],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=IMPORT_TIMEOUT,
        check=False,
    )


LAMBDA_CONFIG = {
    "SES_REGION": REGION,
    "EMAIL_FROM": SENDER,
    "EMAIL_TO": "ops@example.com",
    "DYNAMODB_TABLE": TABLE,
}


def test_bad_config_fails_the_lambda_init_phase_naming_the_variable(tmp_path: Path) -> None:
    """Inside Lambda a malformed variable makes the module import itself fail, naming it."""
    result = import_in_fresh_interpreter(
        tmp_path,
        AWS_LAMBDA_FUNCTION_NAME="blacklist",
        **{**LAMBDA_CONFIG, "EMAIL_TO": "not-an-address"},
    )
    assert result.returncode != 0
    assert result.stdout == ""
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("blacklist_lambda.config.LambdaConfigError: EMAIL_TO:"), last_line
    assert "invalid configuration" in result.stderr


def test_lambda_init_phase_wires_the_handler(tmp_path: Path) -> None:
    """Inside Lambda a valid configuration is read and the clients built at import."""
    result = import_in_fresh_interpreter(
        tmp_path, AWS_LAMBDA_FUNCTION_NAME="blacklist", **LAMBDA_CONFIG
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wired"]


def test_import_outside_lambda_reads_no_environment(tmp_path: Path) -> None:
    """Outside Lambda the module imports without any configuration and wires nothing yet."""
    result = import_in_fresh_interpreter(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["lazy"]


# -- make_handler and running_in_lambda ---------------------------------------------------------


class UnusedSes:
    """An SES client for tests in which no alert may be sent."""

    def send_email(self, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("no alert expected")


def test_make_handler_takes_the_policy_from_the_config_unless_given() -> None:
    """The config's thresholds shape the policy; an explicit `policy` replaces them."""
    config = LambdaConfig(
        ses_region=REGION,
        email_from=SENDER,
        email_to=("ops@example.com",),
        dynamodb_table=TABLE,
        soft_bounce_thresholds=(BounceThreshold("Transient", "General", 1),),
    )
    event = fx.lambda_sns_event(soft_bounce("soft-1"))
    configured = InMemoryBlacklist()
    make_handler(config, configured, UnusedSes())(event, CONTEXT)
    assert configured.get("ooto@example.com") is not None
    explicit = InMemoryBlacklist()
    make_handler(config, explicit, UnusedSes(), policy=DEFAULT_POLICY)(event, CONTEXT)
    assert explicit.get("ooto@example.com") is None


def test_running_in_lambda_reads_the_function_name_variable() -> None:
    """Only a non-empty AWS_LAMBDA_FUNCTION_NAME means the Lambda runtime."""
    assert running_in_lambda({"AWS_LAMBDA_FUNCTION_NAME": "blacklist"})
    assert not running_in_lambda({})
    assert not running_in_lambda({"AWS_LAMBDA_FUNCTION_NAME": ""})
