"""Fixtures of the Redis store's tests: one real server for the session, more on demand.

The root ``conftest.py`` forbids the network; here connections to 127.0.0.1 (the servers
these tests start) and Unix sockets are allowed, nothing else.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from msal_persist import _redis_tracking
from redis_helpers import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 for the whole session, without persistence."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own (to kill or pause), with fsync'ed append-only file."""
    server = RedisServer(tmp_path / "redis", durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, emptied after the test."""
    yield redis_server.url
    client = redis_server.admin()
    client.flushall()
    client.close()


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the session server, for the test's own look at it."""
    client = redis_server.admin()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Allow the local servers these tests start; refuse anything else."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        local = self.family == socket.AF_UNIX or (
            isinstance(address, tuple) and address[0] in {"127.0.0.1", "localhost", "::1"}
        )
        if not local:
            msg = f"network access attempted in a test: {address!r}"
            raise AssertionError(msg)
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def _close_channels() -> Iterator[None]:
    """Close the invalidation channels a test opened, so none outlives its server."""
    yield
    for tracker in list(_redis_tracking._TRACKERS.values()):
        tracker.close()
