"""The shared blacklist in a DynamoDB table, compatible with the original service's tables.

Table: string hash key `email`, nothing else required (on-demand billing recommended); the item
layout is in `_items.py`. Every client or transport error (throttling, missing table, bad
credentials, unreachable endpoint, timeouts) raises `BlacklistUnavailable`, never a miss.
This package imports botocore: import it from here, not through `ses_core.blacklist`.
"""

from ses_core.blacklist.dynamodb._items import entry_from_item, entry_to_item
from ses_core.blacklist.dynamodb._table import DynamoDBBlacklist

__all__ = ["DynamoDBBlacklist", "entry_from_item", "entry_to_item"]
