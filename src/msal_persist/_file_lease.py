"""Refresh leases of the file store: a lock file and a failure note beside the cache.

The lease for key ``K`` of the cache ``<cache>`` is a :class:`~msal_persist.CrossProcessLock`
on ``<cache>.refresh-K.lockfile``: the same protocol, waiting policy and stale-lock breaking
as the cache's own lock, so a holder killed with ``kill -9`` loses it to the kernel at once
(its lock file is broken within about a second), and every wait is bounded. Like every
lock file, it exists only while held.

The failure record is the file ``<cache>.refresh-K.failed``, written atomically (0600, no
link followed) by :class:`~msal_persist._persistence.FilePersistence`. It exists only after
a failed refresh and goes with the next successful one.

No MSAL peer knows these names: peers without msal-persist refresh on their own, as before.
This module knows nothing of msal or JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from ._errors import LockTimeoutError, MsalPersistError
from ._lock import CrossProcessLock
from ._persistence import FilePersistence

__all__ = ["FAILURE_SUFFIX", "LEASE_INFIX", "FileRefreshLease"]

LEASE_INFIX: Final = ".refresh-"
"""Between the cache's name and the key, in a lease's file names."""
FAILURE_SUFFIX: Final = ".failed"
"""Ends the name of a lease's failure record."""


class FileRefreshLease:
    """The lease on refreshing one token of a file store (see the module docstring).

    Attributes:
        lock: The :class:`~msal_persist.CrossProcessLock` on ``<cache>.refresh-K.lockfile``.
    """

    def __init__(self, cache_path: Path, key: str) -> None:
        """Describe the lease for ``key``; nothing is touched on disk until it is taken."""
        base = f"{cache_path}{LEASE_INFIX}{key}"
        # The timeout is given with each acquire: the glue decides how long a refresh may take.
        self.lock: Final = CrossProcessLock(f"{base}.lockfile", timeout=0)
        self._record = FilePersistence(f"{base}{FAILURE_SUFFIX}", fsync=False)
        self._record_path = os.fspath(self._record.path)

    def __repr__(self) -> str:
        """Show the lock file, which identifies the lease."""
        return f"{type(self).__name__}({str(self.lock.path)!r})"

    def acquire(self, timeout: float | None) -> bool:
        """Take the lock file, waiting up to ``timeout``; ``False`` if still held then."""
        try:
            self.lock.acquire(timeout=timeout)
        except LockTimeoutError:
            return False
        return True

    def release(self) -> None:
        """Give the lock file back (it is deleted, as every lock file is on release)."""
        self.lock.release()

    def failure(self) -> bytes | None:
        """Read the failure record; ``None`` if there is none or it cannot be read."""
        # Cheap when absent, the usual case: one failed lstat, then no open at all.
        if not os.path.lexists(self._record_path):
            return None
        try:
            return self._record.load().data
        except (MsalPersistError, OSError):
            return None  # unreadable: as if none, the waiter then asks the authority itself

    def record_failure(self, record: bytes | None) -> None:
        """Write the record atomically, or remove it (``None``); only while held."""
        if not self.lock.is_held:
            raise RuntimeError(f"{self!r} is not held by this instance")
        if record is not None:
            # No fsync: the record is a hint for the next seconds, not data to keep.
            self._record.save(record, sync_directory=False)
        elif os.path.lexists(self._record_path):
            self._record.remove()
