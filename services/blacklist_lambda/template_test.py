"""Tests for template.yaml: cfn-lint is clean and the IAM statements are exactly least-privilege."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cfnlint.api

TEMPLATE = Path(__file__).with_name("template.yaml")
TABLE_ARN = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${Table}"
TABLE_NAME = {"Fn::If": ["CreateTable", {"Ref": "BlacklistTable"}, {"Ref": "ExistingTableName"}]}
SES_ARN = "arn:${AWS::Partition}:ses:${Region}:${AWS::AccountId}"
IDENTITY_ARN = SES_ARN + ":identity/${AlertIdentity}"
CONFIGURATION_SET_ARN = SES_ARN + ":configuration-set/${Set}"
SES_REGION = {"Fn::If": ["SesRegionIsStackRegion", {"Ref": "AWS::Region"}, {"Ref": "SesRegion"}]}
ALERT_SET = {"Fn::If": ["AnyAlertConfigurationSet", "*", {"Ref": "AlertConfigurationSet"}]}


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The template's resources of one CloudFormation type, by logical id."""
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def statements_by_sid(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A policy document's statements keyed by Sid (every statement must have one)."""
    return {statement["Sid"]: statement for statement in document["Statement"]}


def as_list(value: Any) -> list[Any]:
    """IAM allows a single string where a list is expected; normalise to a list."""
    return value if isinstance(value, list) else [value]


def test_cfn_lint_reports_nothing() -> None:
    """cfn-lint finds no error, warning or informational issue in the template."""
    config = cfnlint.api.ManualArgs(include_checks=["I"], regions=["us-east-1", "eu-west-1"])
    matches = cfnlint.api.lint_file(TEMPLATE, config=config)
    assert [str(match) for match in matches] == []


def test_lambda_role_is_trusted_by_lambda_only(template: dict[str, Any]) -> None:
    """Only lambda.amazonaws.com may assume the function's role."""
    roles = resources_of_type(template, "AWS::IAM::Role")
    assert list(roles) == ["FunctionRole"]
    trust = roles["FunctionRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


def test_lambda_role_may_only_write_table_send_alert_and_log(template: dict[str, Any]) -> None:
    """The role's statements are exactly: write its table, send from one identity, log."""
    properties = template["Resources"]["FunctionRole"]["Properties"]
    assert "ManagedPolicyArns" not in properties
    assert "PermissionsBoundary" not in properties
    (policy,) = properties["Policies"]
    statements = statements_by_sid(policy["PolicyDocument"])
    assert set(statements) == {
        "WriteBlacklistTable",
        "SendAdminAlert",
        "WriteOwnLogGroup",
        "SendFailedInvocations",
    }
    for statement in statements.values():
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        assert all("*" not in action for action in as_list(statement["Action"]))

    table = statements["WriteBlacklistTable"]
    assert sorted(table["Action"]) == [
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]
    assert table["Resource"] == {"Fn::Sub": [TABLE_ARN, {"Table": TABLE_NAME}]}

    alert = statements["SendAdminAlert"]
    assert sorted(alert["Action"]) == ["ses:SendEmail", "ses:SendRawEmail"]
    assert alert["Resource"] == [
        {"Fn::Sub": [IDENTITY_ARN, {"Region": SES_REGION}]},
        {"Fn::Sub": [CONFIGURATION_SET_ARN, {"Region": SES_REGION, "Set": ALERT_SET}]},
    ]
    assert alert["Condition"] == {"StringEquals": {"ses:FromAddress": {"Ref": "EmailFrom"}}}

    logs = statements["WriteOwnLogGroup"]
    assert sorted(logs["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs["Resource"] == {"Fn::GetAtt": ["FunctionLogGroup", "Arn"]}

    # Lambda sends the on-failure destination record with the function's own role.
    failed = statements["SendFailedInvocations"]
    assert failed["Action"] == "sqs:SendMessage"
    assert failed["Resource"] == {"Fn::GetAtt": ["FailedInvocationQueue", "Arn"]}


def test_alert_configuration_set_is_optional_and_narrows_the_grant(
    template: dict[str, Any],
) -> None:
    """AlertConfigurationSet defaults to empty (any set, in the alert's SES region only); naming
    a set restricts the grant to it, and only valid configuration-set names are accepted."""
    parameter = template["Parameters"]["AlertConfigurationSet"]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == ""
    pattern = re.compile(f"^(?:{parameter['AllowedPattern']})$")
    assert pattern.match("") and pattern.match("ses-relay_alerts-1")
    assert not pattern.match("a/b") and not pattern.match("x" * 65)
    assert template["Conditions"]["AnyAlertConfigurationSet"] == {
        "Fn::Equals": [{"Ref": "AlertConfigurationSet"}, ""]
    }


def test_relay_policy_is_read_only_on_the_table(template: dict[str, Any]) -> None:
    """The relays' managed policy allows BatchGetItem and GetItem on the table and, only when
    RelaySnsEndpoint is true, nothing else (see the next test)."""
    document = template["Resources"]["RelayReadPolicy"]["Properties"]["PolicyDocument"]
    read, optional = document["Statement"]
    assert read == {
        "Sid": "ReadBlacklistTable",
        "Effect": "Allow",
        "Action": ["dynamodb:BatchGetItem", "dynamodb:GetItem"],
        "Resource": {"Fn::Sub": [TABLE_ARN, {"Table": TABLE_NAME}]},
    }
    assert optional["Fn::If"][0] == "RelayWritesBlacklist"
    assert optional["Fn::If"][2] == {"Ref": "AWS::NoValue"}


def test_relay_sns_endpoint_write_statement_is_optional_and_minimal(
    template: dict[str, Any],
) -> None:
    """RelaySnsEndpoint=true (default false) adds PutItem and UpdateItem on the table only: what
    the relay's SNS endpoint (RELAY_SNS_LISTEN) needs to record bounces and count soft ones."""
    parameter = template["Parameters"]["RelaySnsEndpoint"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("false", ["false", "true"])
    assert template["Conditions"]["RelayWritesBlacklist"] == {
        "Fn::Equals": [{"Ref": "RelaySnsEndpoint"}, "true"]
    }
    document = template["Resources"]["RelayReadPolicy"]["Properties"]["PolicyDocument"]
    condition, statement, otherwise = document["Statement"][1]["Fn::If"]
    assert (condition, otherwise) == ("RelayWritesBlacklist", {"Ref": "AWS::NoValue"})
    assert statement == {
        "Sid": "WriteBlacklistFromSnsEndpoint",
        "Effect": "Allow",
        "Action": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
        "Resource": {"Fn::Sub": [TABLE_ARN, {"Table": TABLE_NAME}]},
    }


def test_operator_policy_wildcard_is_limited_to_suppression_list(template: dict[str, Any]) -> None:
    """Only the SES suppression-list actions (no resource-level scope in IAM) use Resource "*"."""
    document = template["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]
    statements = statements_by_sid(document)
    assert statements["ManageBlacklistTable"]["Resource"] == {
        "Fn::Sub": [TABLE_ARN, {"Table": TABLE_NAME}]
    }
    assert statements["SyncSesSuppressionList"]["Action"] == [
        "ses:ListSuppressedDestinations",
        "ses:PutSuppressedDestination",
    ]
    for statement in statements.values():
        assert all("*" not in action for action in as_list(statement["Action"]))


def test_operator_policy_may_replay_only_the_failed_invocation_queue(
    template: dict[str, Any],
) -> None:
    """Operators may receive, delete and re-hide messages of the failed-invocation queue only."""
    document = template["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]
    statement = statements_by_sid(document)["ReplayFailedInvocations"]
    assert statement["Action"] == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
    ]
    assert statement["Resource"] == {"Fn::GetAtt": ["FailedInvocationQueue", "Arn"]}


def test_failed_invocations_go_to_an_encrypted_queue_kept_14_days(
    template: dict[str, Any],
) -> None:
    """After its explicit retries an asynchronous invocation's record goes to a standard SQS
    queue (encrypted at rest, kept 14 days) instead of being dropped."""
    (name,) = resources_of_type(template, "AWS::Lambda::EventInvokeConfig")
    invoke = template["Resources"][name]["Properties"]
    assert invoke["FunctionName"] == {"Ref": "Function"}
    assert invoke["Qualifier"] == "$LATEST"
    assert invoke["MaximumRetryAttempts"] == 2
    assert invoke["MaximumEventAgeInSeconds"] == 21600
    assert invoke["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["FailedInvocationQueue", "Arn"]}}
    }
    unconditional_queues = [
        name
        for name, queue in resources_of_type(template, "AWS::SQS::Queue").items()
        if "Condition" not in queue  # the shared spool's queues: template_spool_test.py
    ]
    assert unconditional_queues == ["FailedInvocationQueue"]
    queue = template["Resources"]["FailedInvocationQueue"]
    properties = queue["Properties"]
    assert properties["SqsManagedSseEnabled"] is True
    assert properties["MessageRetentionPeriod"] == 1209600  # 14 days, SQS's maximum
    assert "FifoQueue" not in properties  # Lambda destinations must be standard queues
    # Kept past a stack deletion: it may hold notifications not yet in the blacklist.
    assert queue["DeletionPolicy"] == "Retain"
    outputs = template["Outputs"]
    assert outputs["FailedInvocationQueueUrl"]["Value"] == {"Ref": "FailedInvocationQueue"}
    assert outputs["FailedInvocationQueueArn"]["Value"] == {
        "Fn::GetAtt": ["FailedInvocationQueue", "Arn"]
    }


def test_queue_depth_alarm_notifies_the_optional_topic(template: dict[str, Any]) -> None:
    """An alarm fires as soon as one failed invocation waits in the queue; it notifies
    AlarmTopicArn when given and has no action (console and API only) when it is empty."""
    (name,) = resources_of_type(template, "AWS::CloudWatch::Alarm")
    alarm = template["Resources"][name]["Properties"]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["FailedInvocationQueue", "QueueName"]}}
    ]
    assert alarm["Statistic"] == "Maximum"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert alarm["TreatMissingData"] == "notBreaching"
    when_topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert alarm["AlarmActions"] == when_topic
    assert alarm["OKActions"] == when_topic
    parameter = template["Parameters"]["AlarmTopicArn"]
    assert parameter["Type"] == "String"
    assert parameter["Default"] == ""
    pattern = re.compile(f"^(?:{parameter['AllowedPattern']})$")
    assert pattern.match("")
    assert pattern.match("arn:aws:sns:eu-west-1:123456789012:ops-alarms")
    assert not pattern.match("ops-alarms")
    assert not pattern.match("arn:aws:sqs:eu-west-1:123456789012:ops-alarms")
    assert template["Conditions"]["HasAlarmTopic"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]
    }


def test_table_is_on_demand_with_the_email_key(template: dict[str, Any]) -> None:
    """The created table bills per request and uses the string hash key `email`, as existing
    tables do."""
    table = template["Resources"]["BlacklistTable"]
    assert table["Condition"] == "CreateTable"
    assert table["DeletionPolicy"] == "Retain"
    properties = table["Properties"]
    assert properties["BillingMode"] == "PAY_PER_REQUEST"
    assert properties["KeySchema"] == [{"AttributeName": "email", "KeyType": "HASH"}]
    assert properties["AttributeDefinitions"] == [{"AttributeName": "email", "AttributeType": "S"}]


def test_function_runs_the_packaged_handler_with_its_variables(
    template: dict[str, Any],
) -> None:
    """The function runs lambda_function.handler on python3.11 with its config variables."""
    properties = template["Resources"]["Function"]["Properties"]
    assert properties["Runtime"] == "python3.11"
    assert properties["Handler"] == "lambda_function.handler"
    assert properties["Code"] == {
        "S3Bucket": {"Ref": "CodeS3Bucket"},
        "S3Key": {"Ref": "CodeS3Key"},
    }
    assert properties["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    variables = properties["Environment"]["Variables"]
    assert set(variables) == {
        "SES_REGION",
        "EMAIL_FROM",
        "EMAIL_TO",
        "DYNAMODB_TABLE",
        "SOFT_BOUNCE_THRESHOLDS",
    }
    assert variables["DYNAMODB_TABLE"] == TABLE_NAME
    assert variables["SOFT_BOUNCE_THRESHOLDS"] == {"Ref": "SoftBounceThresholds"}


def test_topic_invokes_the_function_and_only_ses_may_publish(template: dict[str, Any]) -> None:
    """SNS may invoke the function for this topic only; SES of this account may publish."""
    permission = template["Resources"]["FunctionInvokePermission"]["Properties"]
    assert permission == {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Fn::GetAtt": ["Function", "Arn"]},
        "Principal": "sns.amazonaws.com",
        "SourceArn": {"Ref": "NotificationTopic"},
    }
    subscription = template["Resources"]["FunctionSubscription"]["Properties"]
    assert subscription["Protocol"] == "lambda"
    assert subscription["Endpoint"] == {"Fn::GetAtt": ["Function", "Arn"]}
    assert subscription["TopicArn"] == {"Ref": "NotificationTopic"}
    (statement,) = template["Resources"]["NotificationTopicPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    assert statement["Principal"] == {"Service": "ses.amazonaws.com"}
    assert statement["Action"] == "sns:Publish"
    assert statement["Condition"] == {
        "StringEquals": {"AWS:SourceAccount": {"Ref": "AWS::AccountId"}}
    }
