"""Tests for the throw-away redis-server helper."""

from __future__ import annotations

import socket

import pytest
import redis

from ses_core.testing.ports import free_port
from ses_core.testing.redis_server import RedisServer


def test_server_answers_survives_restart_on_same_port_and_cleans_up() -> None:
    """The server answers on 127.0.0.1, comes back on the same port after a kill, and its
    directory is gone after the context ends."""
    with RedisServer() as server:
        directory = server.directory
        assert server.url.startswith("redis://127.0.0.1:")
        assert redis.Redis.from_url(server.url).ping()
        port = server.port
        server.kill()
        assert not server.running
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()
        server.start()
        assert server.port == port and server.running
        assert redis.Redis.from_url(server.url).ping()
        assert server.restart() == server.url
        assert redis.Redis.from_url(server.url).ping()
    assert not server.running
    assert not directory.exists()


def test_start_fails_cleanly_when_the_port_is_taken() -> None:
    """A port already in use gives an error, not a hang, and leaves nothing behind."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", free_port()))
        blocker.listen()
        server = RedisServer(port=blocker.getsockname()[1], start_timeout=3.0)
        with pytest.raises((RuntimeError, TimeoutError)):
            with server:
                pass
        assert not server.running
        assert not server.directory.exists()
