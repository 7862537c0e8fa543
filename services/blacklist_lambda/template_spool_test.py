"""template.yaml's optional shared spool (RELAY_SPOOL=sqs): queue, dead-letter queue, bucket and
the exact, least-privilege statements the relays and operators get on them."""

from __future__ import annotations

from typing import Any

from ses_core.queue.sqs import PENDING_TAG_KEY, PENDING_TAG_VALUE

SPOOL_RESOURCES = {
    "SpoolQueue": "AWS::SQS::Queue",
    "SpoolDeadLetterQueue": "AWS::SQS::Queue",
    "SpoolBucket": "AWS::S3::Bucket",
    "SpoolBucketPolicy": "AWS::S3::BucketPolicy",
    "RelaySpoolPolicy": "AWS::IAM::ManagedPolicy",
    "SpoolOperatorPolicy": "AWS::IAM::ManagedPolicy",
}
QUEUE_ARN = {"Fn::GetAtt": ["SpoolQueue", "Arn"]}
DEAD_LETTER_ARN = {"Fn::GetAtt": ["SpoolDeadLetterQueue", "Arn"]}
BUCKET_ARN = {"Fn::GetAtt": ["SpoolBucket", "Arn"]}
BODIES_ARN = {"Fn::Sub": "${SpoolBucket.Arn}/${SpoolBodyPrefix}*"}
LIST_UNDER_PREFIX = {"StringLike": {"s3:prefix": {"Fn::Sub": "${SpoolBodyPrefix}*"}}}


def statements(template: dict[str, Any], policy: str) -> dict[str, dict[str, Any]]:
    document = template["Resources"][policy]["Properties"]["PolicyDocument"]
    return {statement["Sid"]: statement for statement in document["Statement"]}


def test_the_shared_spool_exists_only_when_asked_for(template: dict[str, Any]) -> None:
    """SharedQueue defaults to false; every spool resource and output hangs on its condition."""
    parameter = template["Parameters"]["SharedQueue"]
    assert (parameter["Default"], parameter["AllowedValues"]) == ("false", ["false", "true"])
    assert template["Conditions"]["CreateSharedQueue"] == {
        "Fn::Equals": [{"Ref": "SharedQueue"}, "true"]
    }
    for name, kind in SPOOL_RESOURCES.items():
        resource = template["Resources"][name]
        assert (resource["Type"], resource["Condition"]) == (kind, "CreateSharedQueue")
    outputs = template["Outputs"]
    assert outputs["SpoolQueueUrl"]["Value"] == {"Ref": "SpoolQueue"}
    assert outputs["SpoolBucketName"]["Value"] == {"Ref": "SpoolBucket"}
    for name in ("SpoolQueueUrl", "SpoolDeadLetterQueueUrl", "SpoolBucketName"):
        assert outputs[name]["Condition"] == "CreateSharedQueue"
    for name in ("RelaySpoolPolicyArn", "SpoolOperatorPolicyArn"):
        assert outputs[name]["Condition"] == "CreateSharedQueue"


def test_the_queue_keeps_14_days_and_redrives_poison_to_its_dead_letter_queue(
    template: dict[str, Any],
) -> None:
    """Both queues are encrypted standard queues kept 14 days (above the 5-day queue
    lifetime) and retained; the queue moves an envelope after SpoolMaxReceiveCount receives."""
    for name in ("SpoolQueue", "SpoolDeadLetterQueue"):
        queue = template["Resources"][name]
        assert queue["DeletionPolicy"] == queue["UpdateReplacePolicy"] == "Retain"
        properties = queue["Properties"]
        assert properties["SqsManagedSseEnabled"] is True
        assert properties["MessageRetentionPeriod"] == 1209600
        assert "FifoQueue" not in properties
    redrive = template["Resources"]["SpoolQueue"]["Properties"]["RedrivePolicy"]
    assert redrive == {
        "deadLetterTargetArn": DEAD_LETTER_ARN,
        "maxReceiveCount": {"Ref": "SpoolMaxReceiveCount"},
    }
    assert template["Parameters"]["SpoolMaxReceiveCount"]["Default"] == 5


def test_the_bucket_is_encrypted_private_tls_only_and_expires_bodies_as_a_backstop(
    template: dict[str, Any],
) -> None:
    """SSE-S3 by default, every public-access block on, ACLs off, TLS required; S3 expires
    pending (orphan) bodies after days and every body after the queue's retention."""
    bucket = template["Resources"]["SpoolBucket"]
    assert bucket["DeletionPolicy"] == "Retain"
    properties = bucket["Properties"]
    (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
    assert set(properties["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(properties["PublicAccessBlockConfiguration"]) == 4
    assert properties["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]
    }
    everything, orphans = properties["LifecycleConfiguration"]["Rules"]
    assert everything["Prefix"] == orphans["Prefix"] == {"Ref": "SpoolBodyPrefix"}
    assert everything["ExpirationInDays"] == {"Ref": "SpoolBodyExpirationDays"}
    assert template["Parameters"]["SpoolBodyExpirationDays"]["MinValue"] > 14
    assert orphans["TagFilters"] == [{"Key": PENDING_TAG_KEY, "Value": PENDING_TAG_VALUE}]
    assert orphans["ExpirationInDays"] == {"Ref": "SpoolOrphanExpirationDays"}
    (deny,) = template["Resources"]["SpoolBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]
    assert (deny["Effect"], deny["Action"]) == ("Deny", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_relay_policy_allows_exactly_what_the_spool_calls(template: dict[str, Any]) -> None:
    """Relays may use the queue, dead-letter into the DLQ, and read/write/tag/list bodies under
    the prefix only: the calls SqsSpool makes, and nothing else."""
    found = statements(template, "RelaySpoolPolicy")
    assert set(found) == {
        "UseSpoolQueue",
        "DeadLetterToSpoolDeadLetterQueue",
        "ReadWriteSpoolBodies",
        "ListSpoolBodies",
    }
    assert found["UseSpoolQueue"]["Action"] == [
        "sqs:ChangeMessageVisibility",  # also authorizes ChangeMessageVisibilityBatch
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
        "sqs:SendMessage",
    ]
    assert found["UseSpoolQueue"]["Resource"] == QUEUE_ARN
    assert found["DeadLetterToSpoolDeadLetterQueue"]["Action"] == [
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:SendMessage",
    ]
    assert found["DeadLetterToSpoolDeadLetterQueue"]["Resource"] == DEAD_LETTER_ARN
    assert found["ReadWriteSpoolBodies"]["Action"] == [
        "s3:DeleteObject",
        "s3:DeleteObjectTagging",
        "s3:GetObject",
        "s3:GetObjectTagging",
        "s3:PutObject",
        "s3:PutObjectTagging",  # PutObject with a Tagging header needs it
    ]
    assert found["ReadWriteSpoolBodies"]["Resource"] == BODIES_ARN
    listing = found["ListSpoolBodies"]
    assert (listing["Action"], listing["Resource"]) == ("s3:ListBucket", BUCKET_ARN)
    assert listing["Condition"] == LIST_UNDER_PREFIX
    for statement in found.values():
        assert statement["Effect"] == "Allow"
        assert "*" not in str(statement["Action"])


def test_the_operator_policy_allows_counts_redrive_and_sweep_only(
    template: dict[str, Any],
) -> None:
    """Operators may count both queues, move dead letters back, and sweep orphan bodies."""
    found = statements(template, "SpoolOperatorPolicy")
    assert found["RedriveIntoSpoolQueue"]["Action"] == ["sqs:GetQueueAttributes", "sqs:SendMessage"]
    assert found["RedriveIntoSpoolQueue"]["Resource"] == QUEUE_ARN
    assert found["RedriveFromSpoolDeadLetterQueue"]["Action"] == [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        "sqs:ReceiveMessage",
    ]
    assert found["RedriveFromSpoolDeadLetterQueue"]["Resource"] == DEAD_LETTER_ARN
    assert found["SweepSpoolBodies"]["Action"] == ["s3:DeleteObject", "s3:GetObjectTagging"]
    assert found["SweepSpoolBodies"]["Resource"] == BODIES_ARN
    assert found["ListSpoolBodies"]["Condition"] == LIST_UNDER_PREFIX
    assert set(found) == {
        "RedriveIntoSpoolQueue",
        "RedriveFromSpoolDeadLetterQueue",
        "SweepSpoolBodies",
        "ListSpoolBodies",
    }
