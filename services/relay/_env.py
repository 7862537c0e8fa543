"""Typed reads of the relay's environment variables, each failure a one-line `ConfigError`.

`relay.config` assembles `RelayConfig` from these reads; every message starts with the
variable's name, so a bad deployment stops at start-up saying what to fix. Values that hold
secrets (a password hash, a URL with credentials) are never echoed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from relay.auth import is_password_hash
from relay.variables import (
    RELAY_ALLOWED_NETWORKS,
    RELAY_ALLOWED_SENDER_DOMAINS,
    RELAY_AUTH_USERS,
    RELAY_LOCAL_SMTP_URL,
    Variable,
)

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A setting is missing or invalid; the message is one line naming the variable."""


class EnvReader:
    """Reads variables from one mapping; unset or empty means the variable's default."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def is_set(self, variable: Variable[object]) -> bool:
        """Whether the variable holds something other than white space."""
        return bool(self._environ.get(variable.name, "").strip())

    def raw(self, variable: Variable[T]) -> str | T:
        """The value exactly as given (secrets may start or end with spaces)."""
        value = self._environ.get(variable.name)
        return value if value else variable.default

    def text(self, variable: Variable[T]) -> str | T:
        """The value without surrounding white space."""
        value = self._environ.get(variable.name, "").strip()
        return value or variable.default

    def path(self, variable: Variable[T]) -> Path | T:
        """The value as a path."""
        value = self._environ.get(variable.name, "").strip()
        return Path(value) if value else variable.default

    def choice(self, variable: Variable[str], options: tuple[str, str]) -> str:
        """One of two lower-case words."""
        value = self.text(variable).lower()
        if value not in options:
            first, second = options
            message = f"{variable.name}: expected {first!r} or {second!r}, got {value!r}"
            raise ConfigError(message)
        return value

    def flag(self, variable: Variable[bool]) -> bool:
        """true/false (also 1/0, yes/no, on/off)."""
        value = self._environ.get(variable.name)
        if value is None:
            return variable.default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{variable.name}: expected true/false, got {value!r}")

    def integer(self, variable: Variable[int], *, minimum: int) -> int:
        """A whole number of at least `minimum`."""
        value = self._environ.get(variable.name, "").strip()
        if not value:
            return variable.default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{variable.name}: expected an integer, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{variable.name}: must be at least {minimum}, got {number}")
        return number

    def number(self, variable: Variable[float], *, minimum: float) -> float:
        """A finite number of at least `minimum`."""
        value = self._environ.get(variable.name, "").strip()
        if not value:
            return variable.default
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{variable.name}: expected a number, got {value!r}") from None
        if not number >= minimum or number == float("inf"):
            message = f"{variable.name}: must be a finite number of at least {minimum}, got {value}"
            raise ConfigError(message)
        return number

    def port(self, variable: Variable[int]) -> int:
        """A TCP port number (0 included: an ephemeral port)."""
        number = self.integer(variable, minimum=0)
        if number > 65535:
            raise ConfigError(f"{variable.name}: not a TCP port: {number}")
        return number

    def networks(self) -> tuple[IPNetwork, ...]:
        """RELAY_ALLOWED_NETWORKS: comma-separated CIDRs (a bare address is a /32 or /128)."""
        networks = []
        for item in _items(self.text(RELAY_ALLOWED_NETWORKS)):
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                message = f"{RELAY_ALLOWED_NETWORKS.name}: not a CIDR network: {item!r}"
                raise ConfigError(message) from None
        return tuple(networks)

    def domains(self) -> tuple[str, ...]:
        """RELAY_ALLOWED_SENDER_DOMAINS: comma-separated domains, as lower-case A-labels."""
        domains = []
        for item in _items(self.text(RELAY_ALLOWED_SENDER_DOMAINS)):
            item = item.lower().rstrip(".")
            if not item:
                continue
            try:
                domains.append(item.encode("idna").decode("ascii"))
            except UnicodeError:
                message = f"{RELAY_ALLOWED_SENDER_DOMAINS.name}: not a domain: {item!r}"
                raise ConfigError(message) from None
        return tuple(domains)

    def auth_users(self) -> tuple[tuple[str, str], ...]:
        """RELAY_AUTH_USERS: comma-separated `user:hash` entries (hashes, never passwords)."""
        users = []
        for position, item in enumerate(_items(self.raw(RELAY_AUTH_USERS)), 1):
            user, sep, hashed = item.partition(":")
            if not sep or not user or not is_password_hash(hashed):
                # Never echo the entry: it holds a password hash (or a clear-text password).
                message = (
                    f"{RELAY_AUTH_USERS.name}: entry {position} is not `user:hash` "
                    "(make the hash with `relay hash-password`)"
                )
                raise ConfigError(message)
            users.append((user, hashed))
        return tuple(users)

    def smtp_url(self) -> str | None:
        """RELAY_LOCAL_SMTP_URL: `smtp://` or `smtps://` with a host and a valid port."""
        url = self.text(RELAY_LOCAL_SMTP_URL)
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            message = (
                f"{RELAY_LOCAL_SMTP_URL.name}: expected smtp://host[:port] or smtps://host[:port]"
            )
            raise ConfigError(message)
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError:
            raise ConfigError(f"{RELAY_LOCAL_SMTP_URL.name}: invalid port") from None
        return url


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]
