"""Entry point of the relay (`python -m relay.main`, the PEX, the Docker image).

`relay` alone (or `relay serve`) runs the server; the operator tools are subcommands of the same
entry point (`relay hash-password`, `relay api-key create`, `relay check-config`, see
`relay.cli`). Only this module configures logging. A configuration error prints one line naming
the variable and exits with status 2 (no traceback); SIGTERM/SIGINT shut down gracefully and exit
0. uvloop is used when installed: a faster event loop means a cheaper message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from relay import cli
from relay.config import ConfigError, RelayConfig
from relay.logs import setup_logging
from relay.server import serve

log = logging.getLogger("relay.main")


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` names (default: `sys.argv`); the relay itself when none."""
    args = cli.parse(sys.argv[1:] if argv is None else argv)
    if cli.wants_server(args):
        return run_relay()
    return cli.run_tool(args)


def run_relay() -> int:
    """Load the configuration, run the relay until a signal, return the exit status."""
    try:
        config = RelayConfig.from_environ(os.environ)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, json_lines=config.log_json)
    try:
        # Queue mode delivers in a child process (`relay.delivery_process`), as Postfix keeps
        # smtpd apart from delivery: accepting keeps this process's event loop to itself.
        _run(serve(config, delivery_process=True))
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Typically the port is taken or a file is unreadable: one line, no traceback.
        log.error("cannot start: %s", exc)
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def _run(coroutine: object) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)  # type: ignore[arg-type]
        return
    uvloop.run(coroutine)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
