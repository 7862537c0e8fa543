"""Who may use the relay: client networks, sender domains, and no start as an open relay.

An open relay (anyone on the Internet may send through our SES account) gets the account
suspended within hours, so the relay refuses to start when it listens beyond loopback with neither
required AUTH nor a client-network allowlist, unless `RELAY_ALLOW_OPEN_RELAY` says otherwise.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

import attrs

from relay.config import ConfigError, IPNetwork, RelayConfig

log = logging.getLogger(__name__)


@attrs.frozen
class AccessPolicy:
    """Client networks and sender domains allowed to use the relay (empty = any).

    Attributes:
        networks: CIDRs a client's address must fall in.
        sender_domains: A-label domains MAIL FROM must use (subdomains are not included).
    """

    networks: tuple[IPNetwork, ...] = ()
    sender_domains: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: RelayConfig) -> AccessPolicy:
        """Build from `RELAY_ALLOWED_NETWORKS` / `RELAY_ALLOWED_SENDER_DOMAINS`."""
        return cls(config.allowed_networks, frozenset(config.allowed_sender_domains))

    def client_allowed(self, host: str | None) -> bool:
        """Whether a client at `host` may open a session (unknown address: only when open)."""
        if not self.networks:
            return True
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def sender_allowed(self, ascii_domain: str) -> bool:
        """Whether MAIL FROM may use `ascii_domain` (lower-case A-label)."""
        return not self.sender_domains or ascii_domain in self.sender_domains


def is_loopback_only(hosts: Iterable[str]) -> bool:
    """Whether every listen address is a loopback address (`localhost` counts)."""
    for host in hosts:
        if host == "localhost":
            continue
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    return True


def refuse_open_relay(config: RelayConfig) -> None:
    """Raise `ConfigError` when the configuration would make an open relay (see module doc)."""
    if is_loopback_only([config.listen_host]):
        return
    protected = (config.auth_enabled and config.auth_required) or bool(config.allowed_networks)
    if protected:
        return
    if config.allow_open_relay:
        log.warning(
            "OPEN RELAY: listening on %s without required AUTH or RELAY_ALLOWED_NETWORKS "
            "(RELAY_ALLOW_OPEN_RELAY is set)",
            config.listen_host,
        )
        return
    message = (
        f"SMTP_HOST: listening on {config.listen_host} with neither AUTH (RELAY_AUTH_USERS / "
        "USE_APIKEY) nor RELAY_ALLOWED_NETWORKS would make an open relay; "
        "set one, or RELAY_ALLOW_OPEN_RELAY=true to override"
    )
    raise ConfigError(message)
