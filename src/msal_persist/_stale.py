"""Break a lock file whose holder is gone, never a live holder's, never by two breakers at once.

A peer killed while holding the lock leaves its lock file behind, and every peer waits on
that file until someone deletes it. A waiter here watches the file it keeps finding; once
that file has stayed the same (same device, inode and recorded pid) for
:data:`STALE_CHECK_AFTER`, it examines the holder:

- a live holder of the OS-lock family still holds its OS lock: failing to get it is proof
  of life, and getting it keeps any second breaker out while this one decides;
- a recorded pid that is provably dead on this host, or this process's own pid on a file
  no instance here holds (:data:`HELD_HERE`), is broken at the first examination;
- a file with no pid after :data:`NO_PID_GRACE` lost its creator between create and write;
- anything else is broken after ``stale_grace`` (pids get reused; some peers record none).

Each look opens the lock file once, read-write so that the same descriptor can take the OS
lock, and never through a link or in a way that blocks. Only a regular file with one name
can be a lock file: a symbolic link, a FIFO, a directory or a hard link at the lock path is
refused with a clear error, since no peer makes one and following it would let whoever
planted it steer our writes.

The lock file's record (``"<pid> <argv0>"``) and the OS-lock probe live here too: the lock
protocol uses them to take the lock, this module to judge a holder.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import portalocker

from ._errors import CacheFileError
from ._files import NotRegularFileError, kind_of, open_regular
from ._process import pid_is_running

__all__ = [
    "HELD_HERE",
    "NO_PID_GRACE",
    "STALE_CHECK_AFTER",
    "Descriptor",
    "StaleWatch",
    "Verdict",
    "lock_file_refusal",
    "names_inode",
    "os_unlock",
    "read_pid",
    "recorded_pid",
    "try_os_lock",
    "unlink_if_present",
]

_LOG: Final = logging.getLogger("msal_persist")

STALE_CHECK_AFTER: Final = 0.5
"""Seconds one lock file must stay unchanged before its holder is examined."""
NO_PID_GRACE: Final = 2.0
"""Seconds after which a lock file with neither an OS lock nor a recorded pid is broken."""

_RECORD_BYTES: Final = 64
"""How much of a lock file is read to find its holder's pid (the record is "<pid> <argv0>")."""
_NON_BLOCKING: Final = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
_LOCK_EX_NB: Final = fcntl.LOCK_EX | fcntl.LOCK_NB
_LOCK_UN: Final = fcntl.LOCK_UN
_HELD_ERRNOS: Final = frozenset({errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK})

HELD_HERE: Final[set[tuple[int, int]]] = set()
"""(device, inode) of every lock file some instance in this process holds or is taking."""


class Verdict(enum.Enum):
    """What one look at the lock path found."""

    HELD = enum.auto()
    """A holder (alive, or not yet proven gone) has it: wait."""
    RETRY = enum.auto()
    """Nothing there any more, or nothing this look could judge: look again at once."""
    BROKEN = enum.auto()
    """A dead holder's file was removed: try again at once."""


class StaleWatch:
    """What one waiter has seen of the lock file so far, to tell a dead holder from a slow one.

    Args:
        path: The lock file.
        shown: ``path`` as log lines show it (see :func:`~msal_persist._text.printable`).
    """

    __slots__ = ("_identity", "_next_probe", "_path", "_shown", "_since")

    def __init__(self, path: Path, shown: str) -> None:
        """Watch ``path``; nothing is read until :meth:`check`."""
        self._path = path
        self._shown = shown
        self._identity: tuple[int, int, int | None] | None = None
        self._since = 0.0
        self._next_probe = 0.0

    def check(self, stale_grace: float) -> Verdict:
        """Look at the lock file once; remove it if its holder is provably gone.

        Raises:
            CacheFileError: The lock path holds something no peer creates, or cannot be
                read or examined.
        """
        opened = self._open()
        if opened is None:
            return Verdict.RETRY
        fd, st, writable = opened
        try:
            refused = lock_file_refusal(st)
            if refused is not None:
                raise _refusal(self._path, refused)
            now = time.monotonic()
            # The holder's pid, not size, mtime or the rest of the record: waiters append to
            # the file to say they wait, and content that keeps changing must not keep a file
            # whose holder holds no OS lock alive for ever.
            identity = (st.st_dev, st.st_ino, read_pid(fd))
            if identity != self._identity:
                # A new holder (every holder creates a new file): start observing it afresh.
                self._identity, self._since = identity, now
                self._next_probe = now + STALE_CHECK_AFTER
                return Verdict.HELD
            if now < self._next_probe:
                return Verdict.HELD
            self._next_probe = now + STALE_CHECK_AFTER
            if not writable:
                # Judging takes the OS lock, and where flock is emulated with fcntl locks
                # (NFS) an exclusive one needs a writable descriptor: a lock file we may
                # not write is never ours to break. Look again.
                return Verdict.RETRY
            # A live holder of the OS-lock family keeps its lock; failing to get it is proof
            # of life, and holding it keeps any second breaker out while we decide.
            if not try_os_lock(fd, self._path):
                return Verdict.HELD
            try:
                return self._break_unless_alive(fd, st, now - self._since, stale_grace)
            finally:
                os_unlock(fd)
        except OSError as error:
            if isinstance(error, CacheFileError):
                raise
            raise CacheFileError.from_os_error(self._path, "inspect lock file", error) from None
        finally:
            os.close(fd)

    def _open(self) -> tuple[int, os.stat_result, bool] | None:
        """Open the lock file once, for writing if we may; ``None`` if it is gone.

        Never through a link and never blocking (:func:`open_regular`). Read and write, so
        the same descriptor can take the OS lock; where that is refused (another user's
        file, a read-only mount) a read-only look still tells whether the holder changed.
        """
        try:
            fd, st = open_regular(self._path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except NotRegularFileError as error:
            raise _refusal(self._path, error.kind) from None
        except OSError:
            pass
        else:
            return fd, st, True
        try:
            fd, st = open_regular(self._path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except NotRegularFileError as error:
            raise _refusal(self._path, error.kind) from None
        except OSError as error:
            raise CacheFileError.from_os_error(self._path, "inspect lock file", error) from None
        return fd, st, False

    def _break_unless_alive(
        self, fd: int, st: os.stat_result, age: float, stale_grace: float
    ) -> Verdict:
        # Read again under the OS lock: a peer of the portalocker flavour writes its pid
        # just after locking.
        pid = read_pid(fd)
        # Our own pid on a file no instance of this process holds is a leftover of ours.
        ours_left = pid == os.getpid() and (st.st_dev, st.st_ino) not in HELD_HERE
        dead = pid is not None and (ours_left or not pid_is_running(pid))
        # Every peer records its pid right after creating the file (msal-extensions'
        # portalocker flavour a moment later); no OS lock and still no pid after a while
        # means its creator died in between.
        abandoned = pid is None and age >= NO_PID_GRACE
        if not (dead or abandoned or age >= stale_grace):
            return Verdict.HELD
        if not names_inode(self._path, (st.st_dev, st.st_ino)):
            return Verdict.RETRY
        unlink_if_present(self._path)
        _LOG.warning(
            "removed stale lock file %s left by %s",
            self._shown,
            f"dead process {pid}" if dead else f"pid {pid} after {age:.1f} s unchanged",
        )
        return Verdict.BROKEN


class Descriptor:
    """A raw descriptor dressed as a file: portalocker 3.0's unlock() insists on fileno()."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        """Wrap ``fd``; closing it stays the caller's job."""
        self._fd = fd

    def fileno(self) -> int:
        """Return the descriptor."""
        return self._fd


def try_os_lock(fd: int, path: Path | str) -> bool:
    """Take the exclusive OS lock on ``fd`` without waiting; ``False`` if someone holds it.

    The lock is portalocker's: the primitive its ``LOCKER`` names (``fcntl.flock`` unless
    the application chose ``fcntl.lockf``), called directly with the flags portalocker
    would pass, which skips the flag checks it repeats at every call.

    Raises:
        CacheFileError: The file system refuses OS locks on the lock file.
    """
    locker = _os_locker()
    if locker is None:
        return _try_portalocker(fd, path)
    try:
        locker(fd, _LOCK_EX_NB)
    except OSError as error:
        if error.errno in _HELD_ERRNOS:
            return False
        raise CacheFileError(str(path), "lock", error.strerror or str(error)) from None
    return True


def os_unlock(fd: int) -> None:
    """Drop the OS lock :func:`try_os_lock` took on ``fd`` (closing ``fd`` drops it too)."""
    locker = _os_locker()
    try:
        if locker is None:
            portalocker.unlock(Descriptor(fd))
        else:
            locker(fd, _LOCK_UN)
    except (OSError, portalocker.exceptions.LockException):
        pass  # closing the descriptor drops the OS lock anyway


def _os_locker() -> Callable[[int, int], object] | None:
    # Read at each call: portalocker lets applications reassign LOCKER, and we must take the
    # same lock as every other portalocker user in the process and among the peers.
    locker = getattr(portalocker.portalocker, "LOCKER", None)
    return locker if locker is fcntl.flock or locker is fcntl.lockf else None


def _try_portalocker(fd: int, path: Path | str) -> bool:
    try:
        portalocker.lock(Descriptor(fd), _NON_BLOCKING)
    except portalocker.exceptions.AlreadyLocked:
        return False
    except portalocker.exceptions.LockException as error:
        cause = error.__cause__ if isinstance(error.__cause__, OSError) else None
        raise CacheFileError(
            str(path), "lock", cause.strerror if cause and cause.strerror else str(error)
        ) from None
    return True


def read_pid(fd: int) -> int | None:
    """Return the pid a lock file's record starts with, or ``None`` if there is none.

    Reads only the record's few bytes: the rest of the file is other processes' marks.
    """
    first = os.pread(fd, _RECORD_BYTES, 0).split(maxsplit=1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None


def recorded_pid(path: Path) -> int | None:
    """Return the pid recorded in the lock file at ``path``; ``None`` if absent or unreadable.

    Reads at most the record's few bytes, never through a link or from a FIFO.
    """
    try:
        fd, _ = open_regular(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return read_pid(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def names_inode(path: Path | str, inode: tuple[int, int]) -> bool:
    """Whether ``path`` itself (not a link's target) still names ``(device, inode)``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == inode


def unlink_if_present(path: Path | str) -> None:
    """Delete ``path``; already gone is fine (another breaker or the holder was first)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def lock_file_refusal(st: os.stat_result) -> str | None:
    """What makes ``st`` (an ``lstat`` or ``fstat``) no lock file, in words; ``None`` if fine.

    Only a regular file with one name can be a lock file: every MSAL peer creates it with
    ``O_EXCL``. A link, a directory, a FIFO, a device or a second name was planted, and
    writers refuse it at once rather than follow, block on or append to it.
    """
    if not stat.S_ISREG(st.st_mode):
        return kind_of(st.st_mode)
    if st.st_nlink > 1:
        return f"a file with {st.st_nlink} names (hard links)"
    return None


def _refusal(path: Path, kind: str) -> CacheFileError:
    return CacheFileError(
        str(path), "lock", f"the lock file is {kind}, which no MSAL tool creates: remove it"
    )
