"""The listener's TLS context, loaded from the PEM files named by SSL_CERT_PATH / SSL_KEY_PATH.

TLS 1.2 is the floor (as SES itself requires). Client certificates are not requested: clients
authenticate with AUTH, and aiosmtpd warns about any other verify mode.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from relay.config import ConfigError


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Build a server-side context; raise `ConfigError` naming the variable on a bad file."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(str(cert_path), str(key_path))
    except FileNotFoundError as exc:
        message = f"SSL_CERT_PATH/SSL_KEY_PATH: file not found: {exc.filename}"
        raise ConfigError(message) from None
    except ssl.SSLError as exc:
        message = f"SSL_CERT_PATH/SSL_KEY_PATH: cannot load certificate and key ({exc.reason})"
        raise ConfigError(message) from None
    return context
