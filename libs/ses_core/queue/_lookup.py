"""The blacklist as delivery asks it: which of a message's pending recipients are blacklisted now.

A recipient passed the blacklist at RCPT, but a bounce or complaint may have arrived during the
hours or days the message waited in the queue; delivery looks again right before sending. The
lookup takes the relay's shape (`relay.handler._blacklisted`): a store call shared with other
lookups when the reader offers one (`AsyncLookup`), an answer on the loop when that costs no
waiting (`InstantLookup`), else the synchronous store in a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from ses_core.addresses import normalize_address
from ses_core.blacklist import AsyncLookup, BlacklistReader, InstantLookup
from ses_core.errors import InvalidAddress, LookupWouldBlock


async def blacklisted(reader: BlacklistReader, addresses: Iterable[str]) -> dict[str, str]:
    """The blacklisted ones among `addresses`, each (as given) with its reason ("bounce", ...).

    An address that does not parse is skipped: it was taken at RCPT, so the upstream judges it.
    Raises `BlacklistUnavailable` (or whatever the store raises) when the store cannot answer.
    """
    keys: dict[str, str] = {}
    for address in addresses:
        try:
            keys[address] = normalize_address(address)
        except InvalidAddress:
            continue
    if not keys:
        return {}
    found = None
    wanted = list(keys)
    if isinstance(reader, AsyncLookup):
        try:
            found = await reader.lookup_async(wanted)
        except LookupWouldBlock:
            found = None
    elif isinstance(reader, InstantLookup):
        try:
            found = reader.lookup_now(wanted)
        except LookupWouldBlock:
            found = None
    if found is None:
        found = await asyncio.to_thread(reader.lookup_many, wanted)
    return {address: str(found[key].reason.value) for address, key in keys.items() if key in found}
