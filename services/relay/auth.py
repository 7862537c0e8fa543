"""SMTP AUTH credentials: hashed static users, the DynamoDB API-key table, failure throttling.

Passwords are never stored in clear: static users carry an scrypt hash made by
`relay hash-password`, and new API keys are stored as `sha256:<hex>` items. Checking a
password costs an scrypt run (tens of milliseconds) or a DynamoDB read, so results are cached for
`RELAY_AUTH_CACHE_TTL` under a SHA-256 of the credentials (the cache never holds a password).

The API-key table is shared with existing deployments, whose item format is not published; what
is assumed: items are keyed by the hash key `api_key`, whose value is either the key itself
(existing items) or `sha256:<hex digest of the key>` (keys created by this relay). The client
presents the key as the AUTH password; the user name is free unless the item has a `username`
attribute, which must then match. An item whose `active` attribute is false (boolean, or the
strings "false"/"0"/"no") is refused; a missing `active` means active. The table's client gives
up within seconds (`API_KEYS_CONNECT_TIMEOUT`, `API_KEYS_READ_TIMEOUT`, one retry): a slow or
unreachable table makes AUTH answer `454 4.7.0` (try again later) instead of holding the client.

`AuthThrottle` slows repeated failures from one peer (exponential delay) and then makes the server
disconnect it with 421 for a cool-down period.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from ses_core.errors import SesCoreError

log = logging.getLogger(__name__)

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024

#: Seconds to connect to DynamoDB and to wait for its answer; attempts in all (one retry).
API_KEYS_CONNECT_TIMEOUT = 2.0
API_KEYS_READ_TIMEOUT = 3.0
API_KEYS_ATTEMPTS = 2
#: The key the readiness probe reads: never a stored key (a digest is `sha256:` + 64 hex digits).
_PROBE_KEY = "sha256:readiness-probe"


class CredentialsUnavailable(SesCoreError, ConnectionError):
    """The credential store could not answer (AUTH gets a temporary 454, never a pass)."""


# --- password hashes -------------------------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """Return `scrypt$n$r$p$salt$hash` (URL-safe base64) for `password`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def is_password_hash(text: str) -> bool:
    """Whether `text` has the shape `hash_password` produces."""
    return _parse_hash(text) is not None


def verify_password(password: str, hashed: str) -> bool:
    """Constant-time check of `password` against a `hash_password` result; False if malformed."""
    parsed = _parse_hash(hashed)
    if parsed is None:
        return False
    n, r, p, salt, expected = parsed
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=len(expected)
    )
    return hmac.compare_digest(digest, expected)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parse_hash(text: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or not (1 <= r <= 64) or not (1 <= p <= 16) or len(digest) < 16:
        return None
    return n, r, p, salt, digest


# --- API keys --------------------------------------------------------------------------------


def api_key_digest(key: str) -> str:
    """The stored form of a new API key: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@attrs.frozen
class ApiKeyRecord:
    """One API-key item.

    Attributes:
        active: False when the item is disabled.
        username: the user name the key is bound to, if any.
    """

    active: bool = True
    username: str | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ApiKeyRecord:
        """Build from a DynamoDB item (low-level attribute-value format)."""
        active_attr = item.get("active")
        active = True
        if active_attr is not None:
            if "BOOL" in active_attr:
                active = bool(active_attr["BOOL"])
            elif "S" in active_attr:
                active = active_attr["S"].strip().lower() not in {"false", "0", "no", "off"}
            elif "N" in active_attr:
                active = float(active_attr["N"]) != 0
        username_attr = item.get("username")
        username = username_attr.get("S") if username_attr else None
        return cls(active=active, username=username)


class ApiKeyStore(Protocol):
    """Looks API keys up (synchronous, like boto3; called through `asyncio.to_thread`)."""

    def lookup(self, key: str) -> ApiKeyRecord | None:
        """Return the record for `key` (hashed or legacy clear item) or None; raise
        `CredentialsUnavailable` when the store cannot answer."""
        ...


class DynamoDBApiKeys:
    """The DynamoDB API-key table, read with one BatchGetItem per lookup.

    Attributes:
        table_name: the table.
        client: the boto3 DynamoDB client every call goes through.
    """

    def __init__(self, table_name: str, *, client: Any) -> None:
        self.table_name = table_name
        self.client = client

    @classmethod
    def from_table_name(cls, table_name: str, *, region: str | None = None) -> DynamoDBApiKeys:
        """Create with boto3's default credential chain and region (or `region`), and short
        timeouts with one retry; raises botocore's `NoRegionError` when no region is known."""
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=API_KEYS_CONNECT_TIMEOUT,
            read_timeout=API_KEYS_READ_TIMEOUT,
            retries={"total_max_attempts": API_KEYS_ATTEMPTS, "mode": "standard"},
        )
        return cls(table_name, client=boto3.client("dynamodb", region_name=region, config=config))

    def lookup(self, key: str) -> ApiKeyRecord | None:
        """See `ApiKeyStore.lookup`; the hashed item wins over a legacy clear one."""
        import botocore.exceptions

        digest = api_key_digest(key)
        wanted = [{"api_key": {"S": digest}}]
        if key != digest:
            wanted.append({"api_key": {"S": key}})
        try:
            response = self.client.batch_get_item(
                RequestItems={self.table_name: {"Keys": wanted, "ConsistentRead": False}}
            )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            message = f"API-key table {self.table_name} unavailable: {type(exc).__name__}"
            raise CredentialsUnavailable(message) from exc
        if response.get("UnprocessedKeys"):
            message = f"API-key table {self.table_name} throttled the lookup"
            raise CredentialsUnavailable(message)
        items = response.get("Responses", {}).get(self.table_name, [])
        by_key = {item["api_key"]["S"]: item for item in items}
        item = by_key.get(digest) or by_key.get(key)
        return ApiKeyRecord.from_item(item) if item is not None else None

    def create_key(self, *, username: str | None = None, description: str | None = None) -> str:
        """Create a random key, store only its SHA-256 and return the key (shown once)."""
        key = secrets.token_urlsafe(32)
        item: dict[str, Any] = {"api_key": {"S": api_key_digest(key)}, "active": {"BOOL": True}}
        if username:
            item["username"] = {"S": username}
        if description:
            item["description"] = {"S": description}
        self.client.put_item(TableName=self.table_name, Item=item)
        return key

    def probe(self) -> None:
        """Raise `CredentialsUnavailable` if the table cannot be read (readiness probe).

        A GetItem of a key that is never stored: it needs only the read access lookups need,
        where DescribeTable would need a permission a read-only role lacks (and /readyz would
        then stay 503 on a relay that authenticates fine)."""
        import botocore.exceptions

        try:
            self.client.get_item(TableName=self.table_name, Key={"api_key": {"S": _PROBE_KEY}})
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            message = f"API-key table {self.table_name} unavailable: {type(exc).__name__}"
            raise CredentialsUnavailable(message) from exc


class InMemoryApiKeys:
    """An API-key store in a dict (tests, examples); same semantics as the DynamoDB one."""

    def __init__(self, records: Mapping[str, ApiKeyRecord] | None = None) -> None:
        self._records = dict(records or {})

    def add(self, key: str, record: ApiKeyRecord | None = None, *, hashed: bool = True) -> None:
        """Store `key` (as its digest unless `hashed` is False, like a legacy item)."""
        self._records[api_key_digest(key) if hashed else key] = record or ApiKeyRecord()

    def lookup(self, key: str) -> ApiKeyRecord | None:
        """See `ApiKeyStore.lookup`."""
        return self._records.get(api_key_digest(key)) or self._records.get(key)


# --- the verifier ----------------------------------------------------------------------------


class CredentialVerifier:
    """Verifies a user name and password against static users, then the API-key store; cached."""

    def __init__(
        self,
        *,
        users: Iterable[tuple[str, str]] = (),
        api_keys: ApiKeyStore | None = None,
        cache_ttl: float = 300.0,
        max_cache_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = dict(users)
        self._api_keys = api_keys
        self._ttl = cache_ttl
        self._max_entries = max_cache_entries
        self._clock = clock
        self._cache: dict[bytes, tuple[bool, float]] = {}

    @property
    def enabled(self) -> bool:
        """Whether any credential source is configured."""
        return bool(self._users) or self._api_keys is not None

    async def verify(self, username: str, password: str) -> bool:
        """True when the credentials are valid; raise `CredentialsUnavailable` if unknowable."""
        fingerprint = hashlib.sha256(f"{username}\0{password}".encode()).digest()
        now = self._clock()
        cached = self._cache.get(fingerprint)
        if cached is not None and cached[1] > now:
            return cached[0]
        valid = await asyncio.to_thread(self._verify_uncached, username, password)
        if len(self._cache) >= self._max_entries:
            self._cache.clear()
        self._cache[fingerprint] = (valid, now + self._ttl)
        return valid

    def _verify_uncached(self, username: str, password: str) -> bool:
        hashed = self._users.get(username)
        if hashed is not None and verify_password(password, hashed):
            return True
        if self._api_keys is None or not password:
            return False
        record = self._api_keys.lookup(password)
        if record is None or not record.active:
            return False
        return record.username is None or hmac.compare_digest(record.username, username)


@attrs.define
class _PeerFailures:
    count: int
    last: float


class AuthThrottle:
    """Counts AUTH failures per peer address: increasing delay, then a temporary ban.

    After failure k (1-based) the answer is delayed by `base_delay * 2**(k-1)` (capped at
    `max_delay`); from `max_failures` on, the peer is banned for `ban_seconds` and the server
    answers 421 and disconnects. Counts reset `ban_seconds` after the last failure or on success.
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
        ban_seconds: float = 600.0,
        max_peers: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._ban_seconds = ban_seconds
        self._max_peers = max_peers
        self._clock = clock
        self._peers: dict[str, _PeerFailures] = {}

    def banned(self, peer: str) -> bool:
        """Whether `peer` is in its cool-down period."""
        state = self._current(peer)
        return state is not None and state.count >= self.max_failures

    def record_failure(self, peer: str) -> float:
        """Count one failure; return the delay to apply before answering."""
        now = self._clock()
        state = self._current(peer)
        if state is None:
            if len(self._peers) >= self._max_peers:
                self._peers.clear()
            state = self._peers[peer] = _PeerFailures(0, now)
        state.count += 1
        state.last = now
        return min(self._base_delay * 2 ** (state.count - 1), self._max_delay)

    def record_success(self, peer: str) -> None:
        """Forget the peer's failures."""
        self._peers.pop(peer, None)

    def _current(self, peer: str) -> _PeerFailures | None:
        state = self._peers.get(peer)
        if state is not None and self._clock() - state.last > self._ban_seconds:
            del self._peers[peer]
            return None
        return state
