"""Message bodies in S3: written before their envelope, marked committed once it is on SQS.

SQS cannot be searched, so nothing can tell whether a body's envelope exists by looking at the
queue. The body says it instead: it is written with the tag `ses-relay-body=pending`, and
`put` removes the tag once SendMessage of its envelope succeeded. A body still tagged pending
long after it was written belongs to an accept that failed half-way (its envelope never
arrived): the sweeper removes it, and so may an S3 lifecycle rule that filters on the tag.
Objects without the tag (committed bodies, anything else sharing the bucket) are never swept.

If removing the tag fails after the envelope was sent, the message is still accepted: the
first `body` read sees the tag (GetObject returns the tag count at no extra cost) and commits
it then, so only a body whose first delivery attempt is later than the sweeper's age threshold
could be swept; the threshold (hours) is chosen far above the first attempt's normal delay.
"""

from __future__ import annotations

from typing import Any

import attrs

#: The tag a body carries until its envelope is on SQS.
PENDING_TAG_KEY = "ses-relay-body"
PENDING_TAG_VALUE = "pending"


@attrs.frozen
class StoredBody:
    """A body read back: its bytes, and whether it still carried the pending tag."""

    data: bytes
    pending: bool


class BodyStore:
    """Bodies under `prefix` in `bucket`, encrypted at rest (SSE-S3, or SSE-KMS with a key).

    Blocking (boto3): the spool calls these methods from its thread pool.
    """

    def __init__(
        self, client: Any, bucket: str, prefix: str = "", *, kms_key_id: str | None = None
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._kms_key_id = kms_key_id

    def key_for(self, message_id: str) -> str:
        """The S3 key of a message's body."""
        return f"{self.prefix}{message_id}"

    def put_pending(self, key: str, data: bytes, message_id: str) -> None:
        """Write a body, tagged pending, with the message id in its metadata (for operators)."""
        encryption: dict[str, str] = {"ServerSideEncryption": "AES256"}
        if self._kms_key_id:
            encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._kms_key_id}
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType="message/rfc822",
            Metadata={"message-id": message_id},
            Tagging=f"{PENDING_TAG_KEY}={PENDING_TAG_VALUE}",
            **encryption,
        )

    def commit(self, key: str) -> None:
        """Remove the pending tag: the body's envelope is on SQS, never sweep it."""
        self.client.delete_object_tagging(Bucket=self.bucket, Key=key)

    def get(self, key: str) -> StoredBody:
        """The body's bytes and whether it is still tagged (raises botocore's NoSuchKey)."""
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        with response["Body"] as stream:
            data = stream.read()
        return StoredBody(data, pending=int(response.get("TagCount") or 0) > 0)

    def delete(self, key: str) -> None:
        """Remove a body (S3 answers success for a key that is already gone)."""
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def is_pending(self, key: str) -> bool:
        """Whether the object still carries the pending tag."""
        tags = self.client.get_object_tagging(Bucket=self.bucket, Key=key)["TagSet"]
        return any(
            tag["Key"] == PENDING_TAG_KEY and tag["Value"] == PENDING_TAG_VALUE for tag in tags
        )
