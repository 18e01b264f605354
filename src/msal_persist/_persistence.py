"""Bytes on disk: load with a fingerprint, save atomically, set bad files aside.

This layer knows nothing of locks or of msal. It guarantees that the file at ``path`` is
always a whole document written by one ``save`` (or absent): a reader, or a process started
after a crash at any instant, never sees a mix of two writes, an empty file or a truncated one.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ._errors import CacheFileError
from ._process import pid_is_running

__all__ = ["FilePersistence", "Fingerprint", "Snapshot"]

_LOG: Final = logging.getLogger("msal_persist")

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
_TEMP_SUFFIX: Final = ".tmp"
_MISSING_ERRNOS: Final = frozenset({2, 20})  # ENOENT, ENOTDIR: nothing is there to read


@dataclass(frozen=True)
class Fingerprint:
    """What ``stat`` says about one version of the file.

    Equal fingerprints almost always mean equal bytes, but not always: an inode number can be
    reused within one timestamp tick. Callers that must be sure compare the bytes as well.
    """

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Fingerprint:
        """Take the fields that change whenever the file is replaced or rewritten."""
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Snapshot:
    """The bytes of the file as read from one open handle, and that handle's fingerprint.

    ``data`` and ``fingerprint`` are both ``None`` when the file does not exist.
    ``mode`` holds the permission bits of the file read (``0`` when absent).
    """

    data: bytes | None
    fingerprint: Fingerprint | None
    mode: int = 0

    @property
    def exists(self) -> bool:
        """Whether the file existed when it was read."""
        return self.data is not None


_ABSENT: Final = Snapshot(None, None)


class FilePersistence:
    """One file holding one document, replaced atomically on every save.

    Args:
        path: The file. ``~`` is expanded; relative paths are made absolute now, so a later
            ``chdir`` cannot move the cache.
        fsync: Flush data to stable storage before the new file becomes visible (and the
            directory entry after). Turning it off trades durability across power loss for
            speed; atomicity towards other processes and ``kill -9`` holds either way.

    Attributes:
        loads: Number of times the file's bytes were read.
        saves: Number of files written.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        """Describe the file; nothing is touched on disk until the first call."""
        self.path: Final = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self.fsync: Final = fsync
        self.loads = 0
        self.saves = 0

    def __repr__(self) -> str:
        """Show the path, which is all that identifies this persistence."""
        return f"{type(self).__name__}({str(self.path)!r}, fsync={self.fsync})"

    def fingerprint(self) -> Fingerprint | None:
        """Return the current file's fingerprint, or ``None`` when there is no file."""
        try:
            return Fingerprint.from_stat(os.stat(self.path))
        except OSError as error:
            if error.errno in _MISSING_ERRNOS:
                return None
            raise CacheFileError.from_os_error(self.path, "read", error) from None

    def load(self) -> Snapshot:
        """Read the whole file through one handle and fingerprint that same handle.

        Taking the fingerprint with ``fstat`` on the handle read from (not with a separate
        ``stat``) guarantees it describes these bytes even if the file is replaced meanwhile.

        Raises:
            CacheFileError: The path exists but cannot be read (a directory, no permission,
                an I/O error).
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            if error.errno in _MISSING_ERRNOS:
                return _ABSENT
            raise CacheFileError.from_os_error(self.path, "read", error) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CacheFileError(str(self.path), "read", "it is not a regular file")
            chunks = []
            while chunk := os.read(fd, max(st.st_size, 65536) + 1):
                chunks.append(chunk)
        except OSError as error:
            if isinstance(error, CacheFileError):
                raise
            raise CacheFileError.from_os_error(self.path, "read", error) from None
        finally:
            os.close(fd)
        self.loads += 1
        return Snapshot(b"".join(chunks), Fingerprint.from_stat(st), stat.S_IMODE(st.st_mode))

    def save(self, data: bytes, *, sync_directory: bool = True) -> Fingerprint:
        """Replace the file with ``data`` atomically and return the new file's fingerprint.

        The bytes go to a private temp file in the same directory (same file system, so the
        final rename is atomic), which is flushed and fsynced before ``os.replace`` puts it in
        place; then (unless ``sync_directory`` is false) the directory is fsynced so the
        rename itself survives a power loss.

        Raises:
            CacheFileError: The file is read-only, the path is a directory, or the directory
                cannot be created or written. Nothing on disk has changed.
        """
        if not self._refuse_read_only("write"):
            self._ensure_directory()
        temp = self.path.with_name(
            f".{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}{_TEMP_SUFFIX}",
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(temp, flags, FILE_MODE)
        except OSError as error:
            reason = f"cannot create a file in {self.path.parent}: {error.strerror}"
            raise CacheFileError(str(self.path), "write", reason, error.errno) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
                os.replace(temp, self.path)
                # Stamp the file with the moment it became visible, not the earlier moment
                # its bytes were written: peers such as msal-extensions reload only when the
                # mtime is later than the clock they read after their last load, and would
                # otherwise miss this version and write older tokens over it.
                now = time.time_ns()
                os.utime(fd if os.utime in os.supports_fd else self.path, ns=(now, now))
                fingerprint = Fingerprint.from_stat(os.fstat(fd))
            finally:
                os.close(fd)
        except OSError as error:
            _unlink_quietly(temp)
            raise CacheFileError.from_os_error(self.path, "write", error) from None
        except BaseException:
            _unlink_quietly(temp)
            raise
        if sync_directory:
            self.sync_directory()
        self.saves += 1
        _LOG.debug("wrote %d bytes to %s", len(data), self.path)
        return fingerprint

    def sync_directory(self) -> None:
        """Make the last rename durable: fsync the directory (if ``fsync`` is on).

        :meth:`save` does this itself unless told ``sync_directory=False``, for a caller
        that would rather do it after releasing a lock.
        """
        if self.fsync:
            _fsync_directory(self.path.parent)

    def quarantine(self) -> Path | None:
        """Move the current file aside to ``<path>.corrupt-<UTC timestamp>``; keep its bytes.

        Returns the new path, or ``None`` if there was no file to move.
        """
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        counter = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{counter}")
            counter += 1
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "set aside", error) from None
        return target

    def remove(self) -> bool:
        """Delete the file; return whether there was one.

        Raises:
            CacheFileError: The file is read-only (its owner's intent is honoured, as by
                :meth:`save`) or cannot be removed.
        """
        self._refuse_read_only("remove")
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "remove", error) from None
        return True

    def remove_stale_temp_files(self) -> int:
        """Delete temp files that writers killed mid-save left behind; return how many.

        Only files whose writer pid is no longer running are removed, so a save in progress in
        another process is never disturbed.
        """
        prefix = f".{self.path.name}."
        removed = 0
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return 0
        for name in names:
            if not (name.startswith(prefix) and name.endswith(_TEMP_SUFFIX)):
                continue
            pid_text = name[len(prefix) : -len(_TEMP_SUFFIX)].partition("-")[0]
            if pid_text.isdigit() and not pid_is_running(int(pid_text)):
                _unlink_quietly(self.path.parent / name)
                removed += 1
        if removed:
            _LOG.debug("removed %d stale temp files next to %s", removed, self.path)
        return removed

    def _refuse_read_only(self, operation: str) -> bool:
        """Raise if the file is read-only or a directory; return whether it exists."""
        # os.replace would happily swap out a file its owner made read-only (and root
        # ignores permission bits anyway); honour the owner's intent explicitly.
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode):
            raise CacheFileError(str(self.path), operation, "it is a directory")
        if not st.st_mode & stat.S_IWUSR:
            raise CacheFileError(
                str(self.path),
                operation,
                f"the file is read-only (mode {stat.S_IMODE(st.st_mode):04o})",
            )
        return True

    def _ensure_directory(self) -> None:
        parent = self.path.parent
        if parent.is_dir():
            return
        try:
            parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        except OSError as error:
            raise CacheFileError.from_os_error(parent, "create the directory of", error) from None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable. Some platforms and file systems refuse to open or fsync a
    # directory; atomicity does not depend on this step, so a refusal is not an error.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
