"""A private Secret Service for tests: gnome-keyring on a D-Bus session bus of its own.

What a Linux desktop session provides, started for one test run and stopped after it:
``dbus-daemon`` with a session bus that activates nothing, and gnome-keyring's Secret
Service on it, its login keyring created and unlocked with a password fed on stdin, in a
throwaway home directory. ``keyring`` (through secretstorage and jeepney) then finds it as
it would on a workstation. Needs the programs in :data:`PROGRAMS` and the ``encryption``
extra; no display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

__all__ = ["PROGRAMS", "SecretServiceError", "secret_service"]

PROGRAMS: Final = {"dbus-daemon": "dbus", "gnome-keyring-daemon": "gnome-keyring"}
"""The programs a private Secret Service needs, and the Debian package of each."""

_STARTUP_SECONDS: Final = 20.0
_PASSWORD: Final = "msal-persist-test-password"  # noqa: S105 - a throwaway test keyring

_BUS_CONFIG: Final = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
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


class SecretServiceError(RuntimeError):
    """The private Secret Service could not be started."""


@contextmanager
def secret_service() -> Iterator[str]:
    """Start a private session bus with gnome-keyring's Secret Service; yield its address.

    Point ``keyring`` at it by setting ``DBUS_SESSION_BUS_ADDRESS`` to the address (in
    this process, then ``keyring.core.init_backend()``, or in the environment of the
    processes you start). Both daemons are stopped, and their home directory removed, when
    the block ends::

        with secret_service() as address:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
            keyring.core.init_backend()
            ...

    Raises:
        SecretServiceError: A program is missing (the message names the packages to
            install) or the service did not come up within 20 s.
    """
    missing = sorted({pkg for prog, pkg in PROGRAMS.items() if shutil.which(prog) is None})
    if missing:
        raise SecretServiceError(
            f"a private Secret Service needs: apt-get install -y {' '.join(missing)}"
        )
    home = Path(tempfile.mkdtemp(prefix="msal-persist-keyring-"))
    config = home / "bus.conf"
    config.write_text(_BUS_CONFIG.format(directory=home))
    bus = subprocess.Popen(  # noqa: S603 - fixed arguments
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],  # noqa: S607
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    daemon: subprocess.Popen[str] | None = None
    try:
        address = bus.stdout.readline().strip() if bus.stdout is not None else ""
        if not address.startswith("unix:"):
            raise SecretServiceError("dbus-daemon printed no bus address")
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "DBUS_SESSION_BUS_ADDRESS": address,
        }
        # --unlock reads the login keyring's password on stdin, to its end, and creates
        # the keyring with it.
        daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--unlock", "--components=secrets", "--foreground"],  # noqa: S607
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        if daemon.stdin is not None:
            daemon.stdin.write(_PASSWORD)
            daemon.stdin.close()
        _wait_until_unlocked(address)
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


def _wait_until_unlocked(address: str) -> None:
    try:
        import secretstorage  # noqa: PLC0415 - the "encryption" extra
        from jeepney.io.blocking import open_dbus_connection  # noqa: PLC0415
    except ImportError as error:
        raise SecretServiceError(
            "a private Secret Service needs: pip install 'msal-persist[encryption]'"
        ) from error
    deadline = time.monotonic() + _STARTUP_SECONDS
    while True:
        connection = open_dbus_connection(address)
        try:
            if not secretstorage.get_default_collection(connection).is_locked():
                return
        except secretstorage.exceptions.SecretStorageException:
            pass  # not up yet
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise SecretServiceError(
                f"gnome-keyring's Secret Service did not come up within {_STARTUP_SECONDS:g} s"
            )
        time.sleep(0.05)
