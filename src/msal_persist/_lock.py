"""A cross-process lock on ``<cache>.lockfile`` that every MSAL peer respects.

Peers hold this lock in one of two ways: by *creating the file exclusively* (msal-extensions
without portalocker, msal-node) or by holding an *OS lock* on it (msal-extensions with
portalocker, MSAL.NET, MSAL Go). All of them delete the file on release. To exclude both
families at once, the holder here does both: it creates the file with ``O_EXCL``, takes an
exclusive portalocker lock on it, checks that the path still names the inode it locked, and
records ``"<pid> <argv0>"`` in it, as msal-extensions does. Release unlinks the file while
still holding the OS lock, then unlocks.

This module is that protocol and nothing else. When the lock is taken, a waiter asks
:mod:`~msal_persist._stale` whether the holder is gone, and :mod:`~msal_persist._waiting`
when to try again (sleeping on :mod:`~msal_persist._inotify` where it can).

Interrupts. Taking and giving up the lock run with Ctrl-C held back
(:mod:`~msal_persist._signals`); the waits in between stay interruptible. ``acquire`` either
returns holding the lock or raises holding nothing, so ``with lock:`` never leaks it.

Fork. A child inherits its parent's descriptors but not its hold: after ``fork()`` every
instance forgets what the parent held, without touching the parent's lock.

This module knows nothing of msal or of the cache file.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Final

from ._errors import CacheFileError, LockTimeoutError
from ._files import FILE_MODE, make_private_directories
from ._inotify import DirectoryWatch
from ._signals import checkpoint, deferred_interrupts, interruptible
from ._stale import (
    HELD_HERE,
    NO_PID_GRACE,
    STALE_CHECK_AFTER,
    StaleWatch,
    Verdict,
    names_inode,
    os_unlock,
    recorded_pid,
    try_os_lock,
    unlink_if_present,
)
from ._text import printable
from ._waiting import (
    FIRST_POLL,
    Contention,
    Waiter,
    bounded,
    gap_wait,
    note_release,
    step_aside,
)

# The stale rules' timings are re-exported: callers know them all as the lock's.
__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_STALE_GRACE",
    "NO_PID_GRACE",
    "STALE_CHECK_AFTER",
    "CrossProcessLock",
]

_LOG: Final = logging.getLogger("msal_persist")

DEFAULT_LOCK_TIMEOUT: Final = 30.0
"""Seconds to wait for the lock before :class:`LockTimeoutError`."""
DEFAULT_STALE_GRACE: Final = 10.0
"""Seconds after which a lock file no OS lock protects is broken even if its pid looks alive."""

_CREATE_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_THREAD_WAIT: Final = 0.05
"""How long one wait for another thread's hold lasts before a held-back Ctrl-C is let in."""

_LIVE_LOCKS: weakref.WeakSet[CrossProcessLock] = weakref.WeakSet()


class _Default(enum.Enum):
    """The type of "no timeout given" (``None`` already means "wait forever")."""

    TIMEOUT = enum.auto()


class CrossProcessLock:
    """An exclusive lock shared by processes (and threads) through one lock file.

    Not re-entrant: the same thread acquiring twice waits for itself until the timeout.

    Args:
        path: The lock file, conventionally ``<cache file>.lockfile``.
        timeout: Seconds to wait before raising :class:`LockTimeoutError`; ``None`` waits
            forever, ``0`` tries once.
        stale_grace: Seconds after which a lock file whose holder holds no OS lock is broken
            even though its recorded pid seems alive (pids get reused; some peers record
            none). A lock file whose recorded pid is dead is broken after about
            half a second whatever this says.

    Attributes:
        acquisitions: How many times the lock was taken.
        contended: How many of those had to wait for another holder.
        waited: Seconds spent waiting, in total.
        broken: How many stale lock files this instance removed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        stale_grace: float = DEFAULT_STALE_GRACE,
    ) -> None:
        """Describe the lock; nothing is touched on disk until :meth:`acquire`."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        if stale_grace < 0:
            raise ValueError(f"stale_grace must be >= 0, not {stale_grace!r}")
        self.path: Final = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self._path_text = str(self.path)
        self.timeout = timeout
        self.stale_grace = stale_grace
        self.acquisitions = 0
        self.contended = 0
        self.waited = 0.0
        self.broken = 0
        # Threads of this process queue here instead of polling the file system.
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._owner: int | None = None
        self._held_inode: tuple[int, int] | None = None
        self._shown = printable(self.path)
        self._record_length = 0
        self._contention = Contention()
        self._watch = DirectoryWatch(self.path)
        _LIVE_LOCKS.add(self)

    def __repr__(self) -> str:
        """Show the lock file and whether this instance holds it."""
        return f"{type(self).__name__}({str(self.path)!r}, held={self.is_held})"

    @property
    def is_held(self) -> bool:
        """Whether this instance holds the lock now."""
        return self._fd is not None

    def __enter__(self) -> CrossProcessLock:
        """Acquire the lock."""
        try:
            self.acquire()
            return self  # noqa: TRY300 - an interrupt at the return must be caught below too
        except BaseException:
            self._undo_acquire()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the lock."""
        self.release()

    def acquire(self, timeout: float | _Default | None = _Default.TIMEOUT) -> None:
        """Take the lock, waiting up to ``timeout`` seconds (the instance's by default).

        Either returns holding the lock, or raises (a ``KeyboardInterrupt`` included)
        holding nothing and leaving no lock file of its own behind.

        Raises:
            LockTimeoutError: Another holder kept it past the timeout; names its pid.
            CacheFileError: The lock file's directory cannot be created or written, or the
                lock path holds something no peer creates (a symbolic link, a FIFO, a
                directory, a file with several names).
        """
        if timeout is _Default.TIMEOUT:
            timeout = self.timeout
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        try:
            with deferred_interrupts():
                self._take_thread_lock(deadline, timeout)
                contended = self._acquire_file(deadline, timeout)
                self.acquisitions += 1
                if contended:
                    self.contended += 1
                    self.waited += time.monotonic() - started
                _LOG.debug("acquired %s", self._shown)
            return  # noqa: TRY300 - an interrupt at the return must be caught below too
        except BaseException:
            # Also a Ctrl-C held back until the lock was taken, delivered on leaving the
            # deferral: give back whatever this thread took before letting it through.
            self._undo_acquire()
            raise

    def release(self) -> None:
        """Give the lock up: delete the lock file, then drop the OS lock.

        Never leaves the lock half-held: a failure to delete the lock file is logged (other
        processes then break it as stale) and the OS lock is dropped all the same.

        Raises:
            RuntimeError: This instance does not hold the lock.
        """
        if self._fd is None:
            raise RuntimeError(f"{self._shown} is not locked by this instance")
        with deferred_interrupts():
            self._give_back()
        _LOG.debug("released %s", self._shown)

    def holder_pid(self) -> int | None:
        """Return the pid recorded in the lock file, or ``None`` if absent or unreadable.

        Reads at most the record's few bytes, never through a link or from a FIFO.
        """
        return recorded_pid(self.path)

    def _undo_acquire(self) -> None:
        with deferred_interrupts():
            if self._owner == threading.get_ident():
                self._give_back()

    def _take_thread_lock(self, deadline: float | None, timeout: float | None) -> None:
        # Threads of this process queue here instead of on the file system. The wait comes
        # in short slices so that a held-back Ctrl-C gets in between them.
        if self._thread_lock.acquire(blocking=False):  # the usual case: nobody to wait for
            self._owner = threading.get_ident()
            return
        while not self._thread_lock.acquire(timeout=bounded(_THREAD_WAIT, deadline)):
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeoutError(str(self.path), timeout or 0.0, os.getpid())
            checkpoint()
        self._owner = threading.get_ident()

    def _give_back(self) -> None:
        """Release whatever is held of the lock: the file, then the thread lock."""
        fd = self._fd
        if fd is not None:
            self._fd = None
            try:
                self._delete_lock_file(fd)
            finally:
                if self._held_inode is not None:
                    HELD_HERE.discard(self._held_inode)
                try:
                    os_unlock(fd)
                finally:
                    os.close(fd)
        if self._owner is not None:
            self._owner = None
            self._thread_lock.release()

    def _delete_lock_file(self, fd: int) -> None:
        try:
            # Unlink while still holding the OS lock: a waiter that opened the old inode and
            # gets its OS lock after us finds the path no longer names it and retries,
            # instead of believing it holds a lock nobody else can see.
            # An lstat that fails for another reason than absence cannot tell whose file
            # the path names now: leave it to the stale rules rather than risk deleting
            # another holder's (this process breaks its own leftover at once).
            try:
                st = os.lstat(self._path_text)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._held_inode:
                # The path names our file: its size tells whether waiters marked it.
                note_release(self._contention, st.st_size, self._record_length)
                unlink_if_present(self._path_text)
            else:
                note_release(self._contention, _size_of(fd), self._record_length)
                _LOG.warning("lock file %s was replaced by another process while held", self._shown)
        except OSError as error:
            _LOG.warning(
                "could not remove lock file %s (%s); it will be broken as stale",
                self._shown,
                error.strerror,
            )

    def _acquire_file(self, deadline: float | None, timeout: float | None) -> bool:
        """Loop until this process holds the lock file; return whether it had to wait."""
        contention = self._contention
        now = time.monotonic()
        if now >= contention.yield_until and not gap_wait(now, contention.since, contention.last):
            # Nothing to give way to: one attempt before any waiting machinery is set up.
            fd = self._create()
            if fd is not None and self._lock_created(fd, deadline, timeout):
                return False
        step_aside(contention, self._watch, self.path, deadline)
        waiter = Waiter(self.path, self._contention, self._watch, deadline)
        watch = StaleWatch(self.path, self._shown)
        try:
            while True:
                waiter.before_attempt()
                fd = self._create()
                if fd is not None and self._lock_created(fd, deadline, timeout):
                    return waiter.took_lock()
                # O_EXCL never follows a symbolic link: a link at the path, dangling or not,
                # counts as existing, and the stale check then says what it is.
                retry_now = fd is None and self._break_if_stale(watch)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise LockTimeoutError(str(self.path), timeout or 0.0, self.holder_pid())
                if retry_now:
                    waiter.retry_soon()
                    continue
                if not waiter.waited:
                    self._log_waiting()
                waiter.wait(now)
        finally:
            waiter.close()

    def _break_if_stale(self, watch: StaleWatch) -> bool:
        """Remove the lock file if its holder is gone; ``True`` means retry at once."""
        verdict = watch.check(self.stale_grace)
        if verdict is Verdict.BROKEN:
            self.broken += 1
        return verdict is not Verdict.HELD

    def _log_waiting(self) -> None:
        if _LOG.isEnabledFor(logging.DEBUG):  # holder_pid() reads the file: only if shown
            _LOG.debug("waiting for %s (held by pid %s)", self._shown, self.holder_pid())

    def _create(self) -> int | None:
        """Create the lock file exclusively; ``None`` if something is at the path already."""
        try:
            return os.open(self._path_text, _CREATE_FLAGS, FILE_MODE)
        except FileExistsError:
            return None
        except FileNotFoundError:
            try:
                make_private_directories(self.path.parent)
                return os.open(self._path_text, _CREATE_FLAGS, FILE_MODE)
            except FileExistsError:
                return None
            except OSError as error:
                raise self._error("create lock file", error) from None
        except OSError as error:
            raise self._error("create lock file", error) from None

    def _lock_created(self, fd: int, deadline: float | None, timeout: float | None) -> bool:
        """Hold the OS lock on a file just created; ``False`` (fd closed) to start over.

        On any failure the file just created is deleted again: a failed acquire leaves no
        lock file that would make the next process wait.
        """
        inode: tuple[int, int] | None = None
        try:
            created = os.fstat(fd)
            inode = (created.st_dev, created.st_ino)
            HELD_HERE.add(inode)
            if created.st_mode & 0o777 != FILE_MODE:
                # The umask filtered the creation mode; peers must be able to hand in tickets.
                os.fchmod(fd, FILE_MODE)
            # Record the holder before anything else, so a waiter examining the file always
            # finds a live pid in it and leaves it alone.
            record = _holder_record()
            _write_all(fd, record)
            self._record_length = len(record)
            while not try_os_lock(fd, self._path_text):
                # Someone is examining this new file (a stale check holds the OS lock for
                # microseconds); wait for them, not for the full poll interval.
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeoutError(str(self.path), timeout or 0.0, None)
                with interruptible():
                    time.sleep(FIRST_POLL)
            if not names_inode(self._path_text, inode):
                # A breaker removed the file between our create and our lock. Whoever owns
                # the path now is the holder; ours is an orphan.
                HELD_HERE.discard(inode)
                os.close(fd)
                return False
        except BaseException as error:
            if inode is not None:
                HELD_HERE.discard(inode)
            try:
                # Without an inode (fstat failed) the path is still ours: we created it
                # exclusively a moment ago, and breakers wait far longer before they act.
                if inode is None or names_inode(self.path, inode):
                    unlink_if_present(self.path)
            except OSError:
                pass
            os.close(fd)
            if isinstance(error, OSError) and not isinstance(error, CacheFileError):
                raise self._error("write lock file", error) from None
            raise
        self._fd = fd
        self._held_inode = inode
        return True

    def _error(self, operation: str, error: OSError) -> CacheFileError:
        return CacheFileError.from_os_error(self.path, operation, error)

    def _forget_after_fork(self) -> None:
        self._contention.forget()
        self._watch.forget()
        # The child shares the parent's open file description: unlocking here would release
        # the parent's lock. Closing our copy of the descriptor leaves the parent's intact.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._owner = None
        self._thread_lock = threading.Lock()


_RECORD: list[tuple[int, bytes]] = []
"""This process's lock file record, made once per pid (a forked child has its own)."""


def _holder_record() -> bytes:
    """``"<pid> <argv0>"``, what msal-extensions records too."""
    pid = os.getpid()
    if not _RECORD or _RECORD[0][0] != pid:
        _RECORD[:] = [(pid, f"{pid} {sys.argv[0] if sys.argv else ''}".encode())]
    return _RECORD[0][1]


def _size_of(fd: int) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError:
        return 0  # only the courtesy of stepping aside depends on the size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _after_fork_in_child() -> None:
    for lock in list(_LIVE_LOCKS):
        lock._forget_after_fork()  # noqa: SLF001 - module-private protocol


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
