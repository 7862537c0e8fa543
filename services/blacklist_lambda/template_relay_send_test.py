"""template.yaml's optional relay send policy (RELAY_UPSTREAM=api): exactly what the relay needs."""

from __future__ import annotations

from typing import Any

SES_ARN = "arn:${AWS::Partition}:ses:${Region}:${AWS::AccountId}"
SES_REGION = {"Fn::If": ["SesRegionIsStackRegion", {"Ref": "AWS::Region"}, {"Ref": "SesRegion"}]}


def test_relay_send_policy_exists_only_with_an_identity(template: dict[str, Any]) -> None:
    assert template["Parameters"]["RelaySendIdentity"]["Default"] == ""
    assert template["Conditions"]["RelaySendsThroughApi"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "RelaySendIdentity"}, ""]}]
    }
    policy = template["Resources"]["RelaySendPolicy"]
    assert policy["Condition"] == "RelaySendsThroughApi"
    output = template["Outputs"]["RelaySendPolicyArn"]
    assert (output["Condition"], output["Value"]) == (
        "RelaySendsThroughApi",
        {"Ref": "RelaySendPolicy"},
    )


def test_relay_send_policy_is_scoped_to_the_identity_and_configuration_set(
    template: dict[str, Any],
) -> None:
    document = template["Resources"]["RelaySendPolicy"]["Properties"]["PolicyDocument"]
    send, quota = document["Statement"]
    assert send["Action"] == ["ses:SendEmail", "ses:SendRawEmail"]
    identity, configuration_set = send["Resource"]
    assert identity == {
        "Fn::Sub": [
            SES_ARN + ":identity/${Identity}",
            {"Region": SES_REGION, "Identity": {"Ref": "RelaySendIdentity"}},
        ]
    }
    assert configuration_set == {
        "Fn::Sub": [
            SES_ARN + ":configuration-set/${Set}",
            {
                "Region": SES_REGION,
                "Set": {
                    "Fn::If": ["AnyRelayConfigurationSet", "*", {"Ref": "RelayConfigurationSet"}]
                },
            },
        ]
    }
    # GetAccount (SES_RATE_LIMIT=auto) has no resource-level scope.
    assert (quota["Action"], quota["Resource"]) == (["ses:GetAccount"], "*")
