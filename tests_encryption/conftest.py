"""The real OS keyring for the encryption suite, and keys for the other tests.

``secret_service`` starts what a Linux desktop session provides: a private D-Bus session bus
(``dbus-daemon``) and gnome-keyring's Secret Service on it, its login keyring created and
unlocked with a password fed on stdin, in a throwaway home directory. ``keyring`` then finds
it exactly as it would on a workstation (through secretstorage and jeepney). Both daemons
are stopped when the session ends. A missing program fails the suite with the command that
installs it: a skipped keyring test would prove nothing.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

KEY_VARIABLE = "MSAL_PERSIST_KEY"
ENCRYPTION_VARIABLE = "MSAL_PERSIST_TEST_ENCRYPTION"  # read by tests/workers/cache.py
PROGRAMS = {"dbus-daemon": "dbus", "gnome-keyring-daemon": "gnome-keyring"}


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


def _require_programs() -> None:
    missing = sorted({pkg for prog, pkg in PROGRAMS.items() if shutil.which(prog) is None})
    if missing:
        pytest.fail(
            "the keyring tests need a real Secret Service: "
            f"apt-get update && apt-get install -y {' '.join(missing)} (or run: nox -s encryption)",
            pytrace=False,
        )


BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={directory}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
"""A session bus that activates nothing: the only Secret Service on it is the one started
here, never a second gnome-keyring started on demand with a locked keyring, and no prompt
window can be asked for (a locked keyring then fails at once, as on a headless server)."""


@contextmanager
def running_secret_service() -> Iterator[str]:
    """Start a private D-Bus session bus and gnome-keyring on it; yield the bus address."""
    _require_programs()
    home = Path(tempfile.mkdtemp(prefix="msal-persist-keyring-"))
    config = home / "bus.conf"
    config.write_text(BUS_CONFIG.format(directory=home))
    bus = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    daemon: subprocess.Popen[str] | None = None
    try:
        assert bus.stdout is not None
        address = bus.stdout.readline().strip()
        assert address.startswith("unix:"), address
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "DBUS_SESSION_BUS_ADDRESS": address,
        }
        # --unlock reads the login keyring's password on stdin (to its end) and creates
        # the keyring if needed.
        daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--foreground"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert daemon.stdin is not None
        daemon.stdin.write("msal-persist-test-password")
        daemon.stdin.close()
        _wait_for_secret_service(address)
        yield address
    finally:
        for proc in (daemon, bus):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        if bus.stdout is not None:
            bus.stdout.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def secret_service() -> Iterator[str]:
    """gnome-keyring's Secret Service on a private session bus, for this whole test session.

    This process (and every worker it starts) talks to it through
    ``$DBUS_SESSION_BUS_ADDRESS``; ``keyring`` is made to choose its backend now that
    there is one.
    """
    import keyring  # noqa: PLC0415 - part of the encryption extra

    saved = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    with running_secret_service() as address:
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
        keyring.core.init_backend()
        try:
            yield address
        finally:
            if saved is None:
                os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
            else:
                os.environ["DBUS_SESSION_BUS_ADDRESS"] = saved


def _wait_for_secret_service(address: str) -> None:
    import secretstorage  # noqa: PLC0415
    from jeepney.io.blocking import open_dbus_connection  # noqa: PLC0415 - encryption extra

    deadline = time.monotonic() + 20
    while True:
        connection = open_dbus_connection(address)

        try:
            collection = secretstorage.get_default_collection(connection)
            if not collection.is_locked():
                return
        except secretstorage.exceptions.SecretStorageException:
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            pytest.fail("gnome-keyring's Secret Service did not come up within 20 s")
        time.sleep(0.05)


def new_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def key() -> bytes:
    """A fresh 32-byte key."""
    return new_key()


@pytest.fixture
def key_in_env(monkeypatch: pytest.MonkeyPatch, key: bytes) -> bytes:
    """``key`` in ``$MSAL_PERSIST_KEY``, and the workers told to encrypt with it."""
    monkeypatch.setenv(KEY_VARIABLE, base64.b64encode(key).decode())
    monkeypatch.setenv(ENCRYPTION_VARIABLE, f"env:{KEY_VARIABLE}")
    return key
