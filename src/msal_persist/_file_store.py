"""The file store: one cache file on one host, shared by every process and MSAL peer.

It composes the two file layers below it and knows nothing of msal or JSON:

- :class:`~msal_persist._persistence.FilePersistence`: the bytes (lock-free reads
  fingerprinted on the handle read from, atomic saves, set-aside copies);
- :class:`~msal_persist.CrossProcessLock`: who may write, on ``<cache>.lockfile``, the
  name and protocol every MSAL peer uses.

Its version is the file's stat :class:`~msal_persist._persistence.Fingerprint` (device,
inode, size, mtime in ns), so "changed since?" costs one ``lstat`` and no lock.

It also gives refresh leases (:class:`~msal_persist._store.RefreshLeases`): a lock file per
token being refreshed, beside the cache (:mod:`~msal_persist._file_lease`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Final

from ._file_lease import FileRefreshLease
from ._lock import DEFAULT_LOCK_TIMEOUT, CrossProcessLock
from ._persistence import FilePersistence, Fingerprint
from ._store import Snapshot
from ._text import printable

__all__ = ["LOCK_FILE_SUFFIX", "FileStore"]

LOCK_FILE_SUFFIX: Final = ".lockfile"
"""Appended to the cache path to name the lock file, as every MSAL peer does."""


class FileStore:
    """A cache file and its lock file: the default store of a ``PersistedTokenCache``.

    Args:
        path: The cache file (``~`` expanded, made absolute now).
        lock_timeout: Seconds to wait for another process's lock before raising
            :class:`~msal_persist.LockTimeoutError`; ``None`` waits forever.
        fsync: Flush each write to stable storage before it becomes visible (and the
            directory after). ``False`` is faster and still atomic towards other processes
            and crashes of this one, but a power loss may lose the last write.

    Attributes:
        path: The cache file.
        lock: The :class:`~msal_persist.CrossProcessLock` on ``<path>.lockfile``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        fsync: bool = True,
    ) -> None:
        """Describe the store; nothing is touched on disk until the first call."""
        self._file = FilePersistence(path, fsync=fsync)
        self.path: Final[Path] = self._file.path
        self.lock: Final = CrossProcessLock(f"{self.path}{LOCK_FILE_SUFFIX}", timeout=lock_timeout)
        self._path_text = str(self.path)
        self._display_name = printable(self.path)
        self._leases: dict[str, FileRefreshLease] = {}
        self._leases_lock = threading.Lock()

    def __repr__(self) -> str:
        """Show the file, which is what identifies the store."""
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def display_name(self) -> str:
        """The path, with control characters escaped."""
        return self._display_name

    @property
    def loads(self) -> int:
        """How many times the file's bytes were read."""
        return self._file.loads

    @property
    def saves(self) -> int:
        """How many files were written."""
        return self._file.saves

    def unchanged(self, version: Hashable) -> bool:
        """Whether the file is still the one ``version`` fingerprints: one ``lstat``."""
        # Field by field: building a Fingerprint here would double the cost of every cache
        # hit. lstat, not stat: a symlink planted at the path is a change (load() refuses
        # it), never the file it points to.
        try:
            st = os.lstat(self._path_text)
        except OSError:
            return False  # gone or unreadable: the reload says which
        return (
            isinstance(version, Fingerprint)
            and st.st_mtime_ns == version.mtime_ns
            and st.st_ino == version.inode
            and st.st_size == version.size
            and st.st_dev == version.device
        )

    def load(self) -> Snapshot:
        """Read the whole file through one handle (see ``FilePersistence.load``)."""
        return self._file.load()

    def acquire(self) -> None:
        """Take the cross-process lock (see :meth:`CrossProcessLock.acquire`)."""
        self.lock.acquire()

    def release(self) -> None:
        """Give the cross-process lock back."""
        self.lock.release()

    def prepare(self) -> None:
        """Remove temp files of killed writers; warn if other users may swap the file."""
        self._file.remove_stale_temp_files()
        self._file.warn_if_exposed_directory()

    def save(self, data: bytes) -> Fingerprint:
        """Replace the file atomically; the directory is made durable by make_durable()."""
        # The rename is visible to everyone at once; making it durable needs no lock, and
        # holding the lock for that fsync would make every waiter wait longer.
        return self._file.save(data, sync_directory=False)

    def make_durable(self) -> None:
        """Fsync the directory, so the last rename survives a power loss."""
        self._file.sync_directory()

    def remove(self) -> bool:
        """Delete the file; return whether there was one."""
        return self._file.remove()

    def set_aside(self, data: bytes | None = None) -> str | None:
        """Move the file aside, or keep a copy of ``data``, as ``<path>.corrupt-<time>``."""
        kept = self._file.quarantine() if data is None else self._file.keep_copy(data)
        return None if kept is None else printable(kept)

    def refresh_lease(self, key: str) -> FileRefreshLease:
        """The lease on refreshing the token ``key`` names: ``<path>.refresh-<key>.lockfile``.

        One object per key, so that the threads of this process queue on it in memory.
        """
        if not key or not key.isalnum() or not key.isascii():
            raise ValueError(f"a lease key is letters and digits, not {key!r}")
        with self._leases_lock:
            lease = self._leases.get(key)
            if lease is None:
                lease = self._leases[key] = FileRefreshLease(self.path, key)
            return lease
