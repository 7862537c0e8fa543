"""Tests for LambdaConfig.from_environ: the variables, validated, with errors naming them."""

from __future__ import annotations

import pytest

from blacklist_lambda.config import LambdaConfig, LambdaConfigError, parse_thresholds
from ses_core.feedback import DEFAULT_POLICY, BounceThreshold

GOOD = {
    "SES_REGION": "eu-west-1",
    "EMAIL_FROM": "alerts@example.com",
    "EMAIL_TO": "ops@example.com; oncall@example.org",
    "DYNAMODB_TABLE": "ses-blacklist",
}


def test_reads_the_four_required_variables() -> None:
    """The four variables are read, and EMAIL_TO is split on semicolons."""
    config = LambdaConfig.from_environ(GOOD)
    assert config == LambdaConfig(
        ses_region="eu-west-1",
        email_from="alerts@example.com",
        email_to=("ops@example.com", "oncall@example.org"),
        dynamodb_table="ses-blacklist",
    )


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
    with pytest.raises(LambdaConfigError, match=f"^{variable}: is not set") as caught:
        LambdaConfig.from_environ(environ)
    assert caught.value.variable == variable


@pytest.mark.parametrize("variable", sorted(GOOD))
def test_blank_variable_counts_as_missing(variable: str) -> None:
    """A variable set to whitespace is as missing as an unset one."""
    with pytest.raises(LambdaConfigError, match=f"^{variable}: is not set"):
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
    """A malformed value fails with a LambdaConfigError (a ValueError) naming the variable."""
    with pytest.raises(ValueError, match=f"^{variable}: ") as caught:
        LambdaConfig.from_environ({**GOOD, variable: value})
    assert isinstance(caught.value, LambdaConfigError)
    assert caught.value.variable == variable


@pytest.mark.parametrize("region", ["us-east-1", "us-gov-west-1", "ap-southeast-4", "il-central-1"])
def test_real_region_names_are_accepted(region: str) -> None:
    """Region names of every shape AWS uses pass validation."""
    assert LambdaConfig.from_environ({**GOOD, "SES_REGION": region}).ses_region == region


def test_thresholds_default_to_none_and_the_default_policy() -> None:
    """Unset or blank SOFT_BOUNCE_THRESHOLDS keeps the default suppression policy."""
    for environ in (GOOD, {**GOOD, "SOFT_BOUNCE_THRESHOLDS": " "}):
        config = LambdaConfig.from_environ(environ)
        assert config.soft_bounce_thresholds == ()
        assert config.suppression_policy == DEFAULT_POLICY


def test_thresholds_are_parsed_into_the_policy() -> None:
    """Comma-separated Type/Subtype=N rules become thresholds of the suppression policy."""
    environ = {
        **GOOD,
        "SOFT_BOUNCE_THRESHOLDS": "Transient/General=3, Transient/MailboxFull = 5,",
    }
    config = LambdaConfig.from_environ(environ)
    assert config.soft_bounce_thresholds == (
        BounceThreshold("Transient", "General", 3),
        BounceThreshold("Transient", "MailboxFull", 5),
    )
    policy = config.suppression_policy
    assert policy.threshold_for("Transient", "General") == 3
    assert policy.threshold_for("Transient", "MailboxFull") == 5
    assert policy.threshold_for("Undetermined", "Undetermined") is None


def test_undetermined_and_threshold_one_are_accepted() -> None:
    """Undetermined/Undetermined may take a threshold, and 1 means blacklist at once."""
    assert parse_thresholds("Undetermined/Undetermined=1") == (
        BounceThreshold("Undetermined", "Undetermined", 1),
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("Transient/General", "is not Type/Subtype=N"),
        ("Transient/General=three", "is not Type/Subtype=N"),
        ("Transient/General=-1", "is not Type/Subtype=N"),
        ("Transient=3", "is not Type/Subtype=N"),
        ("Transient/General=0", "at least 1"),
        ("Permanent/General=2", "always blacklisted"),
        ("transient/General=2", "unknown bounce type 'transient'"),
        ("Soft/General=2", "unknown bounce type"),
        ("Transient/Mailboxfull=2", "unknown Transient subtype 'Mailboxfull'"),
        ("Undetermined/General=2", "unknown Undetermined subtype"),
        ("Transient/General=2,Transient/General=3", "more than once"),
    ],
)
def test_malformed_thresholds_are_named(value: str, problem: str) -> None:
    """A malformed SOFT_BOUNCE_THRESHOLDS raises LambdaConfigError naming it and the problem."""
    with pytest.raises(LambdaConfigError, match=f"^SOFT_BOUNCE_THRESHOLDS: .*{problem}") as caught:
        LambdaConfig.from_environ({**GOOD, "SOFT_BOUNCE_THRESHOLDS": value})
    assert caught.value.variable == "SOFT_BOUNCE_THRESHOLDS"
