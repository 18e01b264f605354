"""The real OS keyring for the encryption suite, and keys for the other tests.

``secret_service`` starts what a Linux desktop session provides, for the whole test
session: a private D-Bus session bus and gnome-keyring's Secret Service on it
(:func:`msal_persist.testing.secret_service`). ``keyring`` then finds it exactly as on a
workstation (through secretstorage and jeepney). A missing program fails the suite with
the command that installs it: a skipped keyring test would prove nothing.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import keyring
import pytest

from msal_persist.testing import SecretServiceError
from msal_persist.testing import secret_service as private_secret_service

KEY_VARIABLE = "MSAL_PERSIST_KEY"
ENCRYPTION_VARIABLE = "MSAL_PERSIST_TEST_ENCRYPTION"  # read by tests/workers/cache.py


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, as in tests/; Unix sockets (D-Bus) are local and allowed."""
    connect = socket.socket.connect

    def local_only(sock: socket.socket, address: object) -> None:
        if sock.family != socket.AF_UNIX:
            msg = "network access attempted in a test"
            raise AssertionError(msg)
        connect(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", local_only)


def start_secret_service(stack: ExitStack) -> str:
    """Start a private Secret Service until ``stack`` closes; fail (never skip) without one."""
    try:
        return stack.enter_context(private_secret_service())
    except SecretServiceError as error:
        pytest.fail(f"{error} (or run: nox -s encryption)", pytrace=False)


@pytest.fixture(scope="session")
def secret_service() -> Iterator[str]:
    """gnome-keyring's Secret Service on a private session bus, for this whole test session.

    This process (and every worker it starts) talks to it through
    ``$DBUS_SESSION_BUS_ADDRESS``; ``keyring`` chooses its backend again now that there is
    one. Yields the bus address.
    """
    saved = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    with ExitStack() as stack:
        address = start_secret_service(stack)
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring.core.init_backend()
        try:
            yield address
        finally:
            if saved is None:
                os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = saved


@pytest.fixture
def key() -> bytes:
    """A fresh 32-byte key."""
    return os.urandom(32)


@pytest.fixture
def key_in_env(monkeypatch: pytest.MonkeyPatch, key: bytes) -> bytes:
    """``key`` in ``$MSAL_PERSIST_KEY``, and the workers told to encrypt with it."""
    monkeypatch.setenv(KEY_VARIABLE, base64.b64encode(key).decode())
    monkeypatch.setenv(ENCRYPTION_VARIABLE, f"env:{KEY_VARIABLE}")
    return key
