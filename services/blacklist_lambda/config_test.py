"""Tests for LambdaConfig.from_environ: the original variables, validated, errors naming them."""

from __future__ import annotations

import attrs
import pytest

from blacklist_lambda.config import ConfigError, LambdaConfig

GOOD = {
    "SES_REGION": "eu-west-1",
    "EMAIL_FROM": "alerts@example.com",
    "EMAIL_TO": "ops@example.com; oncall@example.org",
    "DYNAMODB_TABLE": "ses-blacklist",
}


def test_reads_the_original_variables() -> None:
    """The four variables are read, and EMAIL_TO is split on semicolons."""
    config = LambdaConfig.from_environ(GOOD)
    assert config == LambdaConfig(
        ses_region="eu-west-1",
        email_from="alerts@example.com",
        email_to=("ops@example.com", "oncall@example.org"),
        dynamodb_table="ses-blacklist",
    )


def test_config_is_frozen() -> None:
    """A config value cannot be changed after cold start."""
    config = LambdaConfig.from_environ(GOOD)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.ses_region = "us-east-1"  # type: ignore[misc]


def test_display_name_sender_and_trailing_semicolon_are_accepted() -> None:
    """A `"Name" <addr>` sender is kept as written and empty EMAIL_TO parts are ignored."""
    environ = {**GOOD, "EMAIL_FROM": '"SES relay" <alerts@example.com>', "EMAIL_TO": "a@b.example;"}
    config = LambdaConfig.from_environ(environ)
    assert config.email_from == '"SES relay" <alerts@example.com>'
    assert config.email_to == ("a@b.example",)


@pytest.mark.parametrize("variable", sorted(GOOD))
def test_missing_variable_is_named(variable: str) -> None:
    """Each missing variable fails with an error naming it."""
    environ = {name: value for name, value in GOOD.items() if name != variable}
    with pytest.raises(ConfigError, match=f"^{variable}: is not set") as caught:
        LambdaConfig.from_environ(environ)
    assert caught.value.variable == variable


@pytest.mark.parametrize("variable", sorted(GOOD))
def test_blank_variable_counts_as_missing(variable: str) -> None:
    """A variable set to whitespace is as missing as an unset one."""
    with pytest.raises(ConfigError, match=f"^{variable}: is not set"):
        LambdaConfig.from_environ({**GOOD, variable: "  "})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SES_REGION", "Ireland"),
        ("SES_REGION", "eu-west"),
        ("EMAIL_FROM", "alerts.example.com"),
        ("EMAIL_TO", "ops@example.com;not-an-address"),
        ("EMAIL_TO", " ; ;"),
        ("DYNAMODB_TABLE", "a"),
        ("DYNAMODB_TABLE", "black list"),
    ],
)
def test_malformed_variable_is_named(variable: str, value: str) -> None:
    """A malformed value fails with a ConfigError (a ValueError) naming the variable."""
    with pytest.raises(ValueError, match=f"^{variable}: ") as caught:
        LambdaConfig.from_environ({**GOOD, variable: value})
    assert isinstance(caught.value, ConfigError)
    assert caught.value.variable == variable


@pytest.mark.parametrize("region", ["us-east-1", "us-gov-west-1", "ap-southeast-4", "il-central-1"])
def test_real_region_names_are_accepted(region: str) -> None:
    """Region names of every shape AWS uses pass validation."""
    assert LambdaConfig.from_environ({**GOOD, "SES_REGION": region}).ses_region == region
