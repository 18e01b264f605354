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
from ._files import (
    FILE_MODE,
    NOT_FOUND_ERRNOS,
    NotRegularFileError,
    kind_of,
    make_private_directories,
    open_regular,
)
from ._process import pid_is_running
from ._signals import deferred_interrupts
from ._store import ABSENT, Snapshot
from ._text import printable

__all__ = ["MAX_SET_ASIDE", "FilePersistence", "Fingerprint"]

_LOG: Final = logging.getLogger("msal_persist")

MAX_SET_ASIDE: Final = 10
"""How many set-aside copies (``<cache>.corrupt-*``) are kept; the oldest go beyond that."""
SET_ASIDE_INFIX: Final = ".corrupt-"
_TEMP_SUFFIX: Final = ".tmp"
_LINK_ADVICE: Final = (
    "msal-persist neither reads nor writes through links: use the path of its target"
)


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
        self._shown = printable(self.path)
        # Strings for the paths every load and save use: pathlib costs more than the
        # system calls themselves on tmpfs.
        self._path_text = str(self.path)
        self._temp_prefix = os.path.join(self.path.parent, f".{self.path.name}.")
        self._directory_text = str(self.path.parent)
        self._warned_links = False
        self._warned_mode = False

    def __repr__(self) -> str:
        """Show the path, which is all that identifies this persistence."""
        return f"{type(self).__name__}({str(self.path)!r}, fsync={self.fsync})"

    def fingerprint(self) -> Fingerprint | None:
        """Return the current file's fingerprint, or ``None`` when there is no file."""
        try:
            # lstat: a symlink planted at the path must look like a change (then load()
            # refuses it), never like the file it points to.
            return Fingerprint.from_stat(os.lstat(self.path))
        except OSError as error:
            if error.errno in NOT_FOUND_ERRNOS:
                return None
            raise CacheFileError.from_os_error(self.path, "read", error) from None

    def load(self) -> Snapshot:
        """Read the whole file through one handle and fingerprint that same handle.

        Taking the fingerprint with ``fstat`` on the handle read from (not with a separate
        ``stat``) guarantees it describes these bytes even if the file is replaced meanwhile.

        Raises:
            CacheFileError: The path exists but cannot be read: no permission, an I/O error,
                or it is not a regular file (a directory, a FIFO, a device, or a symbolic
                link, which is never followed). A FIFO never blocks the call.
        """
        try:
            fd, st = open_regular(self._path_text, os.O_RDONLY)
        except NotRegularFileError as error:
            raise self._not_regular("read", error.kind) from None
        except OSError as error:
            if error.errno in NOT_FOUND_ERRNOS:
                return ABSENT
            raise CacheFileError.from_os_error(self.path, "read", error) from None
        try:
            chunks = []
            while chunk := os.read(fd, max(st.st_size, 65536) + 1):
                chunks.append(chunk)
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "read", error) from None
        finally:
            os.close(fd)
        self.loads += 1
        if st.st_nlink > 1 and not self._warned_links:
            self._warned_links = True
            _LOG.warning(
                "token cache %s has %d names (hard links); each write replaces this name "
                "only, so the others keep old tokens",
                self._shown,
                st.st_nlink,
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and not self._warned_mode:
            self._warned_mode = True
            _LOG.warning(
                "token cache %s is accessible by group or others (mode %04o); run: chmod 600 %s",
                self._shown,
                mode,
                self._shown,
            )
        return Snapshot(b"".join(chunks), Fingerprint.from_stat(st))

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
        temp = f"{self._temp_prefix}{os.getpid()}-{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        with deferred_interrupts():  # the temp file must never outlive this call
            try:
                fd = os.open(temp, flags, FILE_MODE)
            except OSError as error:
                reason = f"cannot create a file in {self.path.parent}: {error.strerror}"
                raise CacheFileError(str(self.path), "write", reason, error.errno) from None
            try:
                fingerprint = self._fill_and_replace(fd, temp, data)
            except OSError as error:
                _unlink_quietly(temp)
                raise CacheFileError.from_os_error(self.path, "write", error) from None
            except BaseException:
                _unlink_quietly(temp)
                raise
        if sync_directory:
            self.sync_directory()
        self.saves += 1
        _LOG.debug("wrote %d bytes to %s", len(data), self._shown)
        return fingerprint

    def _fill_and_replace(self, fd: int, temp: str, data: bytes) -> Fingerprint:
        try:
            # The umask filtered os.open's mode: 0277 would make the file read-only for
            # its owner, and every later write would fail.
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
            os.replace(temp, self._path_text)
            # Stamp the file with the moment it became visible, not the earlier moment its
            # bytes were written: peers such as msal-extensions reload only when the mtime is
            # later than the clock they read after their last load, and would otherwise miss
            # this version and write older tokens over it. A failure from here on leaves the
            # new file in place: the write has happened, only its stamp is missing.
            now = time.time_ns()
            try:
                os.utime(fd, ns=(now, now))
            except OSError as error:
                _LOG.warning("could not stamp %s: %s", self._shown, error.strerror)
            return Fingerprint.from_stat(os.fstat(fd))
        finally:
            os.close(fd)

    def sync_directory(self) -> None:
        """Make the last rename durable: fsync the directory (if ``fsync`` is on).

        :meth:`save` does this itself unless told ``sync_directory=False``, for a caller
        that would rather do it after releasing a lock.
        """
        if self.fsync:
            _fsync_directory(self._directory_text)

    def quarantine(self) -> Path | None:
        """Move the current file aside to ``<path>.corrupt-<UTC timestamp>``; keep its bytes.

        The copy is made private (0600) whatever the mode the bad file had, and at most
        :data:`MAX_SET_ASIDE` copies are kept (the oldest go first). Returns the new path, or
        ``None`` if there was no file to move.
        """
        target = self._set_aside_name()
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "set aside", error) from None
        try:
            fd, _ = open_regular(target, os.O_RDONLY)
        except OSError:
            pass  # replaced meanwhile by whoever can write here: not ours to change
        else:
            try:
                os.fchmod(fd, FILE_MODE)
            finally:
                os.close(fd)
        self._prune_set_aside()
        return target

    def keep_copy(self, data: bytes) -> Path:
        """Save ``data`` beside the cache as a set-aside copy (0600); return its path.

        Used when only part of a document is bad: the cache keeps the good part, the copy
        keeps every byte of the original.
        """
        target = self._set_aside_name()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        with deferred_interrupts():
            try:
                fd = os.open(target, flags, FILE_MODE)
            except OSError as error:
                raise CacheFileError.from_os_error(target, "set aside", error) from None
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as error:
                _unlink_quietly(target)
                raise CacheFileError.from_os_error(target, "set aside", error) from None
            except BaseException:
                _unlink_quietly(target)
                raise
            finally:
                os.close(fd)
        self._prune_set_aside()
        return target

    def set_aside_copies(self) -> list[Path]:
        """The set-aside copies beside the cache, oldest first."""
        prefix = f"{self.path.name}{SET_ASIDE_INFIX}"
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return []
        # "<stamp>" sorts before "<stamp>.1", and stamps sort by time.
        return [self.path.parent / n for n in sorted(n for n in names if n.startswith(prefix))]

    def _set_aside_name(self) -> Path:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}{SET_ASIDE_INFIX}{stamp}")
        counter = 1
        while os.path.lexists(target):
            target = self.path.with_name(f"{self.path.name}{SET_ASIDE_INFIX}{stamp}.{counter}")
            counter += 1
        return target

    def _prune_set_aside(self) -> None:
        # Whatever keeps writing garbage must not fill the disk with copies of it.
        for old in self.set_aside_copies()[:-MAX_SET_ASIDE]:
            _unlink_quietly(old)
            _LOG.warning(
                "removed %s: more than %d set-aside copies of %s",
                printable(old),
                MAX_SET_ASIDE,
                self._shown,
            )

    def remove(self) -> bool:
        """Delete the file; return whether there was one.

        Raises:
            CacheFileError: The file is read-only (its owner's intent is honoured, as by
                :meth:`save`), is not a regular file (a symbolic link is not removed in place
                of its target) or cannot be removed.
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
        stale = self.stale_temp_files()
        for temp in stale:
            _unlink_quietly(temp)
        if stale:
            _LOG.debug("removed %d stale temp files next to %s", len(stale), self.path)
        return len(stale)

    def stale_temp_files(self) -> list[Path]:
        """The temp files beside the cache whose writer is no longer running, by name.

        :meth:`save` names its temp file ``.<name>.<pid>-<random>.tmp``; a file of that
        shape whose pid is not running was left by a writer killed mid-save. A name with no
        pid is never judged stale.
        """
        prefix = f".{self.path.name}."
        try:
            names = os.listdir(self.path.parent)
        except OSError:
            return []
        stale = []
        for name in sorted(names):
            if not (name.startswith(prefix) and name.endswith(_TEMP_SUFFIX)):
                continue
            pid_text = name[len(prefix) : -len(_TEMP_SUFFIX)].partition("-")[0]
            if pid_text.isdigit() and not pid_is_running(int(pid_text)):
                stale.append(self.path.parent / name)
        return stale

    def warn_if_exposed_directory(self) -> None:
        """Log a warning when other users could swap the cache for one of their own.

        A directory that group or others may write to (without the sticky bit), or that
        another user owns, lets them replace the file with one holding their account.
        """
        try:
            st = os.stat(self.path.parent)
        except OSError:
            return
        mode = stat.S_IMODE(st.st_mode)
        writable = mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX
        foreign = st.st_uid not in {os.geteuid(), 0}
        if writable or foreign:
            _LOG.warning(
                "the directory of token cache %s (mode %04o, owner uid %d) lets other users "
                "replace the cache with their own; keep it in a directory only you can write",
                self._shown,
                mode,
                st.st_uid,
            )

    def _not_regular(self, operation: str, kind: str) -> CacheFileError:
        advice = f": {_LINK_ADVICE}" if kind == "a symbolic link" else ""
        return CacheFileError(
            str(self.path), operation, f"it is {kind}, not a regular file{advice}"
        )

    def _refuse_read_only(self, operation: str) -> bool:
        """Raise if the path is read-only or not a regular file; return whether it exists."""
        # os.replace would happily swap out a file its owner made read-only (and root
        # ignores permission bits anyway), or a symlink for a file that then diverges from
        # the link's target; honour the owner's intent explicitly.
        try:
            st = os.lstat(self._path_text)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode):
            raise self._not_regular(operation, kind_of(st.st_mode))
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
            make_private_directories(parent)
        except OSError as error:
            raise CacheFileError.from_os_error(parent, "create the directory of", error) from None


def _unlink_quietly(path: Path | str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_directory(directory: str) -> None:
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
