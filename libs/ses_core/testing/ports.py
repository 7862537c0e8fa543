"""Loopback ports for the stand-in servers and the processes tests start.

Everything a test starts listens on 127.0.0.1 only, so nothing is ever reachable from outside the
machine. `free_port` asks the kernel for a port that is free now; a server started a moment later
binds it (a race with other processes is possible but harmless on a test machine).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on `host:port` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until_accepting(
    port: int, *, timeout: float, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll until 127.0.0.1:`port` accepts connections.

    Raises `TimeoutError` after `timeout` seconds, or `ChildProcessError` as soon as `alive()`
    says the server that should open the port has ended.
    """
    deadline = time.monotonic() + timeout
    while not accepts_connections(port):
        if not alive():
            message = f"the server for port {port} ended before it listened"
            raise ChildProcessError(message)
        if time.monotonic() > deadline:
            message = f"nothing listened on port {port} within {timeout} s"
            raise TimeoutError(message)
        time.sleep(0.05)
