"""The RCPT-time blacklist lookup, answered without blocking the event loop when it can be.

Apart from `relay.handler` to keep that module small.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

from ses_core.blacklist import AsyncLookup, BlacklistEntry, BlacklistReader, InstantLookup
from ses_core.errors import LookupWouldBlock


async def blacklisted(
    blacklist: BlacklistReader,
    instant: InstantLookup | None,
    batched: AsyncLookup | None,
    executor: Executor | None,
    address: str,
) -> BlacklistEntry | None:
    """The blacklist entry for `address`: answered on the loop when that costs no waiting (a
    cached answer, or a SQLite read: `InstantLookup`), by a store call shared with other
    sessions' lookups (`AsyncLookup`: the cache's misses batched for DynamoDB), else by the store
    in a thread. The address is passed as written, not only its key: the DynamoDB adapter also
    matches case-sensitive legacy items with it."""
    if batched is not None:
        try:
            found = await batched.lookup_async([address])
        except LookupWouldBlock:
            pass
        else:
            return next(iter(found.values()), None)
    elif instant is not None:
        try:
            found = instant.lookup_now([address])
        except LookupWouldBlock:
            pass
        else:
            return next(iter(found.values()), None)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, blacklist.get, address)
