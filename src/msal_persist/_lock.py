"""A cross-process lock on ``<cache>.lockfile`` that every MSAL peer respects.

Peers hold this lock in one of two ways: by *creating the file exclusively* (msal-extensions
without portalocker, msal-node) or by holding an *OS lock* on it (msal-extensions with
portalocker, MSAL.NET, MSAL Go). All of them delete the file on release. To exclude both
families at once, the holder here does both: it creates the file with ``O_EXCL``, takes an
exclusive portalocker lock on it, checks that the path still names the inode it locked, and
records ``"<pid> <argv0>"`` in it, as msal-extensions does. Release unlinks the file while
still holding the OS lock, then unlocks.

Waiting. Since every peer releases by deleting the file, waiters sleep in the kernel on an
inotify watch of the directory and wake within microseconds of a release, using no CPU
while they wait. They also take turns: each appends a ticket (``+<monotonic ns>``, the
moment it started waiting) to the current lock file; at a release every waiter reads the
tickets of the file just deleted and the earliest tries first; and a holder that finds
tickets in its file at release steps aside briefly before locking again, so a process that
locks back to back cannot starve the others. Without inotify (other systems, network file
systems) waiters poll with a short, growing, jittered sleep. Peers that poll leave no trace,
so under sustained contention msal-persist processes keep off the lock during shared gap
windows, which every poller sees in time (see ``_leave_room_for_peers``).

This module knows nothing of msal or of the cache file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import select
import stat
import struct
import sys
import threading
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import portalocker

from ._errors import CacheFileError, LockTimeoutError
from ._process import pid_is_running

__all__ = ["DEFAULT_LOCK_TIMEOUT", "CrossProcessLock"]

_LOG: Final = logging.getLogger("msal_persist")

DEFAULT_LOCK_TIMEOUT: Final = 30.0
"""Seconds to wait for the lock before :class:`LockTimeoutError`."""
STALE_CHECK_AFTER: Final = 0.5
"""Seconds one lock file must stay unchanged before its holder is examined."""
NO_PID_GRACE: Final = 2.0
"""Seconds after which a lock file with neither an OS lock nor a recorded pid is broken."""
DEFAULT_STALE_GRACE: Final = 10.0
"""Seconds after which a lock file no OS lock protects is broken even if its pid looks alive."""

# Waiters poll with a short, growing, jittered sleep. Holders keep the lock for about a
# millisecond, so the first polls must be that fine; the cap keeps 32 waiters on 2 cores
# from burning the CPU the holder needs.
_FIRST_POLL: Final = 0.0002
_MAX_POLL: Final = 0.004
_NON_BLOCKING: Final = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
_OPEN_FLAGS: Final = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)

_LIVE_LOCKS: weakref.WeakSet[CrossProcessLock] = weakref.WeakSet()


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
        self.timeout = timeout
        self.stale_grace = stale_grace
        self.acquisitions = 0
        self.contended = 0
        self.waited = 0.0
        self.broken = 0
        # Threads of this process queue here instead of polling the file system.
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        self._record_length = 0
        self._yield_until = 0.0
        self._contended_since = self._contended_last = -1.0
        self._events: _DirectoryEvents | Literal[False] | None = None
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
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the lock."""
        self.release()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds.

        Raises:
            LockTimeoutError: Another holder kept it past the timeout; names its pid.
            CacheFileError: The lock file's directory cannot be created or written.
        """
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        if not self._thread_lock.acquire(timeout=-1 if deadline is None else self.timeout or 0):
            raise LockTimeoutError(str(self.path), self.timeout or 0.0, os.getpid())
        try:
            contended = self._acquire_file(deadline)
        except BaseException:
            self._thread_lock.release()
            raise
        self.acquisitions += 1
        if contended:
            self.contended += 1
            self.waited += time.monotonic() - started
        _LOG.debug("acquired %s", self.path)

    def release(self) -> None:
        """Give the lock up: delete the lock file, then drop the OS lock.

        Raises:
            RuntimeError: This instance does not hold the lock.
        """
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"{self.path} is not locked by this instance")
        try:
            # Waiters appended to the file while we held it: step aside for a moment after
            # this release, or a holder that locks again at once would starve them.
            held = os.fstat(fd)
            if held.st_size > self._record_length:
                self._yield_until = time.monotonic() + _YIELD_TIME
                self._note_contention()
            # Unlink while still holding the OS lock: a waiter that opened the old inode and
            # gets its OS lock after us finds the path no longer names it and retries,
            # instead of believing it holds a lock nobody else can see.
            if _names_inode(self.path, held):
                _unlink(self.path)
            else:
                _LOG.warning("lock file %s was replaced by another process while held", self.path)
        finally:
            self._fd = None
            try:
                portalocker.unlock(_Descriptor(fd))
            finally:
                os.close(fd)
                self._thread_lock.release()
        _LOG.debug("released %s", self.path)

    def holder_pid(self) -> int | None:
        """Return the pid recorded in the lock file, or ``None`` if absent or unreadable."""
        try:
            return _parse_pid(self.path.read_bytes()[:64])
        except OSError:
            return None

    def _acquire_file(self, deadline: float | None) -> bool:
        """Loop until this process holds the lock file; return whether it had to wait."""
        self._step_aside(deadline)
        poll = _FIRST_POLL
        watch = _StaleWatch()
        events: _DirectoryEvents | None = None
        ticket = _Ticket(time.monotonic_ns())
        waited = False
        try:
            while True:
                if events is not None:
                    events.clear()
                self._leave_room_for_peers(deadline)
                fd = self._create()
                if fd is not None and self._lock_created(fd, deadline):
                    if waited:
                        self._note_contention()
                    return waited
                if fd is None and self._break_if_stale(watch):
                    continue
                self._note_contention()
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise LockTimeoutError(str(self.path), self.timeout or 0.0, self.holder_pid())
                if not waited:
                    self._log_waiting()
                    waited = True
                    events = self._directory_events()
                    if events is not None:
                        # Events count from now on: one more attempt before the first wait,
                        # so that no release slips between the failed attempt and the wait.
                        events.clear()
                        continue
                remaining = _MAX_WAKE_WAIT if deadline is None else deadline - now
                if events is not None:
                    self._wait_turn(events, ticket, deadline)
                    continue
                pause = poll * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not secrecy
                time.sleep(min(pause, remaining))
                poll = min(poll * 2, _MAX_POLL)
        finally:
            ticket.close()

    def _log_waiting(self) -> None:
        if _LOG.isEnabledFor(logging.DEBUG):  # holder_pid() reads the file: only if shown
            _LOG.debug("waiting for %s (held by pid %s)", self.path, self.holder_pid())

    def _wait_turn(self, events: _DirectoryEvents, ticket: _Ticket, deadline: float | None) -> None:
        """Sleep in the kernel until it is this waiter's turn to try, or a poll is due.

        Every waiter wakes at each release: the one that asked first tries at once; the
        others give it a moment and, once it has the lock, go back to waiting without
        trying, so the lock goes round in the order it was asked for.
        """
        while True:
            ticket.hand_in(self.path)
            if not events.wait(_GONE, _bounded(_MAX_WAKE_WAIT, deadline)):
                return  # time for a stale check (or a poll the kernel could not spare)
            place = ticket.place()
            if not place or not events.wait(_CAME, _bounded(place * _TURN, deadline)):
                return  # our turn, or the ones before us did not come: try

    def _directory_events(self) -> _DirectoryEvents | None:
        if self._events is None:
            self._events = _DirectoryEvents.open(self.path) or False
            if self._events:
                weakref.finalize(self, self._events.close)
        return self._events or None

    def _note_contention(self) -> None:
        now = time.monotonic()
        if now - self._contended_last > _STILL_CONTENDED:
            self._contended_since = now
        self._contended_last = now

    def _leave_room_for_peers(self, deadline: float | None) -> None:
        """Under sustained contention, keep off the lock during the shared gap windows.

        msal-extensions and msal-node poll every 0.1-0.25 s and give up after 5 s; they
        leave no trace while they wait. When msal-persist processes hand the lock to each
        other back to back, the lock file would always exist when such a peer looks. So a
        process that has been contending for a while does not take the lock during the
        first _GAP_LENGTH of every _GAP_PERIOD of the host's monotonic clock (the same clock
        in every process, so the windows line up): every poller finds it free in time.
        """
        now = time.monotonic()
        if (
            now - self._contended_last > _STILL_CONTENDED
            or now - self._contended_since < _SUSTAINED_CONTENTION
        ):
            return
        phase = now % _GAP_PERIOD
        if phase < _GAP_LENGTH:
            time.sleep(_bounded(_GAP_LENGTH - phase, deadline))

    def _step_aside(self, deadline: float | None) -> None:
        """After a release that others waited for, let one of them take the lock first."""
        left = self._yield_until - time.monotonic()
        if deadline is not None:
            left = min(left, deadline - time.monotonic())
        events = self._directory_events() if left > 0 else None
        if events is None:
            return
        events.clear()
        if not os.path.exists(self.path):
            events.wait(_CAME, left)

    def _create(self) -> int | None:
        """Create the lock file exclusively; ``None`` if it exists already."""
        flags = _OPEN_FLAGS | os.O_CREAT | os.O_EXCL
        try:
            return os.open(self.path, flags, 0o600)
        except FileExistsError:
            return None
        except FileNotFoundError:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                return os.open(self.path, flags, 0o600)
            except FileExistsError:
                return None
            except OSError as error:
                raise CacheFileError.from_os_error(self.path, "create lock file", error) from None
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "create lock file", error) from None

    def _lock_created(self, fd: int, deadline: float | None) -> bool:
        """Hold the OS lock on a file just created; ``False`` (fd closed) to start over."""
        try:
            # Record the holder before anything else, so a waiter examining the file always
            # finds a live pid in it and leaves it alone.
            record = f"{os.getpid()} {sys.argv[0] if sys.argv else ''}".encode()
            os.write(fd, record)
            self._record_length = len(record)
            while not _try_os_lock(fd):
                # Someone is examining this new file (a stale check holds the OS lock for
                # microseconds); wait for them, not for the full poll interval.
                if deadline is not None and time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeoutError(str(self.path), self.timeout or 0.0, None)
                time.sleep(_FIRST_POLL)
            if not _names_inode(self.path, os.fstat(fd)):
                # A breaker removed the file between our create and our lock. Whoever owns
                # the path now is the holder; ours is an orphan.
                portalocker.unlock(_Descriptor(fd))
                os.close(fd)
                return False
        except LockTimeoutError:
            raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _break_if_stale(self, watch: _StaleWatch) -> bool:
        """Remove the lock file if its holder is gone; ``True`` means retry at once."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return True
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "inspect lock file", error) from None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise CacheFileError(str(self.path), "lock", "the lock file is a directory")
            record = os.pread(fd, 64, 0).partition(_WAITING)[0]
        finally:
            os.close(fd)
        now = time.monotonic()
        # The holder's record, not size or mtime: waiters append to the file to say they
        # wait, and that must not look like a new holder to the stale check.
        identity = (st.st_dev, st.st_ino, record)
        if identity != watch.identity:
            # A new holder (every holder creates a new file): start observing it afresh.
            watch.identity, watch.since, watch.next_probe = identity, now, now + STALE_CHECK_AFTER
            return False
        if now < watch.next_probe:
            return False
        watch.next_probe = now + STALE_CHECK_AFTER
        return self._examine_holder(identity, now - watch.since)

    def _examine_holder(self, identity: tuple[int, int, bytes], age: float) -> bool:
        try:
            fd = os.open(self.path, _OPEN_FLAGS)
        except FileNotFoundError:
            return True
        except OSError as error:
            raise CacheFileError.from_os_error(self.path, "inspect lock file", error) from None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != identity[:2]:
                return True
            # A live holder of the OS-lock family keeps its lock; failing to get it is proof
            # of life, and holding it keeps any second breaker out while we decide.
            if not _try_os_lock(fd):
                return False
            try:
                pid = _parse_pid(os.pread(fd, 64, 0))
                dead = pid is not None and not pid_is_running(pid)
                # Every peer records its pid right after creating the file (msal-extensions'
                # portalocker flavour a moment later); no OS lock and still no pid after a
                # while means its creator died in between.
                abandoned = pid is None and age >= NO_PID_GRACE
                if not (dead or abandoned or age >= self.stale_grace):
                    return False
                if not _names_inode(self.path, st):
                    return True
                _unlink(self.path)
                self.broken += 1
                _LOG.warning(
                    "removed stale lock file %s left by %s",
                    self.path,
                    f"dead process {pid}" if dead else f"pid {pid} after {age:.1f} s unchanged",
                )
                return True
            finally:
                portalocker.unlock(_Descriptor(fd))
        finally:
            os.close(fd)

    def _forget_after_fork(self) -> None:
        self._yield_until = 0.0
        self._contended_since = self._contended_last = -1.0
        # The parent's inotify queue is shared with us; reading it would steal its events.
        self._events = None
        # The child shares the parent's open file description: unlocking here would release
        # the parent's lock. Closing our copy of the descriptor leaves the parent's intact.
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._thread_lock = threading.Lock()


class _Ticket:
    """A waiter's place in line, written into the lock file of each holder it waits for.

    Waiters append ``+<CLOCK_MONOTONIC ns when they started waiting>`` to the current lock
    file (the clock is the same for every process on a host) and keep it open. When the
    holder releases, each waiter reads the marks of that file through its still open
    handle: its place is the number of earlier marks. The marks also tell the holder, at
    release, that someone waits (it then steps aside for a moment).
    """

    __slots__ = ("_fd", "_inode", "_started_ns")

    def __init__(self, started_ns: int) -> None:
        self._started_ns = started_ns
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    def hand_in(self, path: Path) -> None:
        """Put this ticket into the current lock file, once per holder."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return  # released meanwhile (or unwritable): nothing to hand in to
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == self._inode:
                os.close(fd)
                return
            os.write(fd, b"%s%d" % (_WAITING, self._started_ns))
        except OSError:
            os.close(fd)
            return
        self.close()
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)

    def place(self) -> int:
        """How many waiters of the last holder asked before this one (0 if unknown)."""
        if self._fd is None:
            return 0
        try:
            content = os.pread(self._fd, 65536, 0)
        except OSError:
            return 0
        marks = content.split(_WAITING)[1:]
        return sum(1 for mark in marks if mark.isdigit() and int(mark) < self._started_ns)

    def close(self) -> None:
        """Let go of the lock file the ticket was handed in to."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _DirectoryEvents:
    """Tells a waiter when the lock file goes or comes, through Linux inotify.

    Every MSAL peer releases by deleting the lock file, so a waiter sleeps in the kernel
    and wakes within microseconds of a release, using no CPU meanwhile. One inotify instance
    serves a lock for its whole life: closing one waits for an RCU grace period (about 15 ms
    here), far too slow to pay per acquisition. Where inotify is missing (other systems, the
    per-user instance limit) waiters poll instead, and on network file systems, where it
    sees no remote change, every wait is bounded by ``_MAX_WAKE_WAIT`` anyway.
    """

    __slots__ = ("__weakref__", "_fd", "_name")

    def __init__(self, fd: int, name: bytes) -> None:
        self._fd = fd
        self._name = name

    @classmethod
    def open(cls, path: Path) -> _DirectoryEvents | None:
        """Start watching ``path``'s directory; ``None`` where that is impossible."""
        if _LIBC is None:
            return None
        fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        mask = _GONE | _CAME
        if _LIBC.inotify_add_watch(fd, os.fsencode(path.parent), mask) < 0:
            os.close(fd)
            return None
        return cls(fd, os.fsencode(path.name))

    def wait(self, mask: int, timeout: float) -> bool:
        """Sleep until the lock file had a ``mask`` event (``True``) or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self._fd], [], [], left)[0]:
                return False
            # Other names come and go too (the cache's temp file at every write): waking
            # every waiter for those would only make them all retry in vain.
            if any(name == self._name and event & mask for event, name in self._read()):
                return True
        return False

    def clear(self) -> None:
        """Forget the events so far (the next attempt looks at the directory itself)."""
        self._read()

    def close(self) -> None:
        """Stop watching."""
        os.close(self._fd)

    def _read(self) -> list[tuple[int, bytes]]:
        events = []
        try:
            while data := os.read(self._fd, 65536):
                offset = 0
                while offset + _EVENT_HEADER.size <= len(data):
                    _, mask, _, length = _EVENT_HEADER.unpack_from(data, offset)
                    start = offset + _EVENT_HEADER.size
                    events.append((mask, data[start : start + length].rstrip(b"\0")))
                    offset = start + length
        except BlockingIOError:
            pass
        return events


def _load_inotify() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None
    return libc


_LIBC: Final = _load_inotify()
_EVENT_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len (then the name)
_GONE: Final = 0x200 | 0x40  # IN_DELETE | IN_MOVED_FROM
_CAME: Final = 0x100 | 0x80  # IN_CREATE | IN_MOVED_TO
_GAP_PERIOD: Final = 1.5
_GAP_LENGTH: Final = 0.3
_SUSTAINED_CONTENTION: Final = 0.5
_STILL_CONTENDED: Final = 0.25
"""Contended acquisitions this close together count as one sustained contention."""
_TURN: Final = 0.00015
"""How much later each waiter tries than the one before it in line, after a release."""
_WAITING: Final = b"+"
"""What a waiter appends to the lock file to tell its holder that someone waits."""
_YIELD_TIME: Final = 0.005
"""How long a holder that others waited for stands aside before it may lock again."""
_MAX_WAKE_WAIT: Final = 0.05
"""Upper bound of one sleep in the kernel: stale checks and network file systems need polls."""


class _StaleWatch:
    """How long the current lock file has been observed unchanged."""

    __slots__ = ("identity", "next_probe", "since")

    def __init__(self) -> None:
        self.identity: tuple[int, int, bytes] | None = None
        self.since = 0.0
        self.next_probe = 0.0


class _Descriptor:
    """A raw descriptor dressed as a file: portalocker 3.0's unlock() insists on fileno()."""

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _bounded(seconds: float, deadline: float | None) -> float:
    return seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic()))


def _try_os_lock(fd: int) -> bool:
    try:
        portalocker.lock(_Descriptor(fd), _NON_BLOCKING)
    except portalocker.exceptions.AlreadyLocked:
        return False
    except portalocker.exceptions.LockException as error:
        cause = error.__cause__ if isinstance(error.__cause__, OSError) else None
        raise CacheFileError(
            str(fd), "lock", cause.strerror if cause and cause.strerror else str(error)
        ) from None
    return True


def _names_inode(path: Path, held: os.stat_result) -> bool:
    """Whether ``path`` still names the file ``held`` (an fstat of our descriptor)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _parse_pid(content: bytes) -> int | None:
    first = content.split(maxsplit=1)[:1]
    return int(first[0]) if first and first[0].isdigit() else None


def _after_fork_in_child() -> None:
    for lock in list(_LIVE_LOCKS):
        lock._forget_after_fork()  # noqa: SLF001 - module-private protocol


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
