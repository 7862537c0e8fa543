"""Create an API key in the DynamoDB API-key table: `relay api-key create TABLE [--user U]`.

Only the key's SHA-256 is stored (`api_key = "sha256:<hex>"`, `active = true`); the key itself is
printed once and cannot be recovered from the table. Clients use it as the AUTH password.
boto3's normal chain supplies credentials and region (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ...).
`python -m relay.api_keys TABLE` still works where the sources are importable.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from relay.auth import DynamoDBApiKeys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `create` (shared by `relay api-key create` and `python -m`)."""
    parser.add_argument("table", help="the API-key table (DYNAMODB_API_KEYS_TABLE)")
    parser.add_argument("--user", help="bind the key to this AUTH user name")
    parser.add_argument("--description", help="free text stored with the key")


def create(
    table: str, *, user: str | None = None, description: str | None = None, client: Any = None
) -> int:
    """Create one key and print it; return 0 (or 1 when the table cannot be written)."""
    import botocore.exceptions

    try:
        keys = (
            DynamoDBApiKeys(table, client=client)
            if client is not None
            else DynamoDBApiKeys.from_table_name(table)
        )
        key = keys.create_key(username=user, description=description)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"cannot create the key in {table}: {exc}", file=sys.stderr)
        return 1
    print(key)
    return 0


def main(argv: list[str] | None = None, *, client: Any = None) -> int:
    """`python -m relay.api_keys TABLE [--user U] [--description D]`."""
    parser = argparse.ArgumentParser(prog="python -m relay.api_keys", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return create(args.table, user=args.user, description=args.description, client=client)


if __name__ == "__main__":
    raise SystemExit(main())
