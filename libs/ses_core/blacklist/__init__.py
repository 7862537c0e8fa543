"""The blacklist repository: who must never be mailed again, and why.

The Lambda records SES bounces and complaints (`BlacklistWriter`), every relay replica looks
recipients up before accepting them (`BlacklistReader`), and the operator CLI lists and fixes
entries (`BlacklistAdmin`); `Blacklist` is all three roles. Stores implementing it:
`InMemoryBlacklist` and the read-through `CachedBlacklist` (here), a local SQLite file
(`ses_core.blacklist.sqlite.SqliteBlacklist`) and the shared DynamoDB table
(`ses_core.blacklist.dynamodb.DynamoDBBlacklist`, which needs botocore, so it is imported from
its own module). `BatchingLookup` shares one store call among the lookups of concurrent
sessions (`AsyncLookup`); a relay puts it between the cache and the DynamoDB table.
"""

from ses_core.blacklist._model import (
    UNKNOWN_TIME,
    BlacklistEntry,
    BlacklistEvent,
    BlacklistPage,
    BlacklistReason,
    OccurrenceResult,
)
from ses_core.blacklist._ports import (
    AsyncLookup,
    Blacklist,
    BlacklistAdmin,
    BlacklistReader,
    BlacklistWriter,
    InstantLookup,
)
from ses_core.blacklist.batching import BatchingLookup
from ses_core.blacklist.cache import CachedBlacklist, CacheStats
from ses_core.blacklist.memory import InMemoryBlacklist

__all__ = [
    "UNKNOWN_TIME",
    "AsyncLookup",
    "BatchingLookup",
    "Blacklist",
    "BlacklistAdmin",
    "BlacklistEntry",
    "BlacklistEvent",
    "BlacklistPage",
    "BlacklistReader",
    "BlacklistReason",
    "BlacklistWriter",
    "CacheStats",
    "CachedBlacklist",
    "InMemoryBlacklist",
    "InstantLookup",
    "OccurrenceResult",
]
