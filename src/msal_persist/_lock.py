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

Hostile objects. Only a regular file with one name can be a lock file: a symbolic link, a
FIFO, a directory or a hard link at the lock path is refused at once with a clear error
(no peer makes one, and following it would let whoever planted it steer our writes). Nothing
is opened in a way that follows a link or blocks, and a lock file's content is read only as
far as its format needs.

Interrupts. Taking and giving up the lock run with Ctrl-C held back
(:mod:`~msal_persist._signals`); the waits in between stay interruptible. ``acquire`` either
returns holding the lock or raises holding nothing, so ``with lock:`` never leaks it.

This module knows nothing of msal or of the cache file.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import select
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
from ._files import FILE_MODE, NotRegularFileError, make_private_directories, open_regular
from ._process import pid_is_running
from ._signals import checkpoint, deferred_interrupts, interruptible
from ._text import printable

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
_CREATE_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_RECORD_BYTES: Final = 64
"""How much of a lock file is read to find its holder's pid (the record is "<pid> <argv0>")."""
_MAX_LOCK_FILE_BYTES: Final = 4096
"""Past this size a lock file takes no more waiter marks, and no more of it is read."""
_THREAD_WAIT: Final = 0.05
"""How long one wait for another thread's hold lasts before a held-back Ctrl-C is let in."""
_QUICK_RETRIES: Final = 64
"""Retries without a pause (the lock file vanished under us) before the next one sleeps."""

_LIVE_LOCKS: weakref.WeakSet[CrossProcessLock] = weakref.WeakSet()
_HELD_HERE: set[tuple[int, int]] = set()
"""(device, inode) of every lock file some instance in this process holds or is taking."""


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
        self._owner: int | None = None
        self._held_inode: tuple[int, int] | None = None
        self._shown = printable(self.path)
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

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds.

        Either returns holding the lock, or raises (a ``KeyboardInterrupt`` included)
        holding nothing and leaving no lock file of its own behind.

        Raises:
            LockTimeoutError: Another holder kept it past the timeout; names its pid.
            CacheFileError: The lock file's directory cannot be created or written, or the
                lock path holds something no peer creates (a symbolic link, a FIFO, a
                directory, a file with several names).
        """
        started = time.monotonic()
        deadline = None if self.timeout is None else started + self.timeout
        try:
            with deferred_interrupts():
                self._take_thread_lock(deadline)
                contended = self._acquire_file(deadline)
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
        try:
            fd, _ = open_regular(self.path, os.O_RDONLY)
        except OSError:
            return None
        try:
            return _parse_pid(os.pread(fd, _RECORD_BYTES, 0))
        except OSError:
            return None
        finally:
            os.close(fd)

    def _undo_acquire(self) -> None:
        with deferred_interrupts():
            if self._owner == threading.get_ident():
                self._give_back()

    def _take_thread_lock(self, deadline: float | None) -> None:
        # Threads of this process queue here instead of on the file system. The wait comes
        # in short slices so that a held-back Ctrl-C gets in between them.
        while not self._thread_lock.acquire(timeout=_bounded(_THREAD_WAIT, deadline)):
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeoutError(str(self.path), self.timeout or 0.0, os.getpid())
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
                    _HELD_HERE.discard(self._held_inode)
                try:
                    portalocker.unlock(_Descriptor(fd))
                except (OSError, portalocker.exceptions.LockException):
                    pass  # closing the descriptor below drops the OS lock anyway
                finally:
                    os.close(fd)
        if self._owner is not None:
            self._owner = None
            self._thread_lock.release()

    def _delete_lock_file(self, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
        except OSError:
            size = 0  # only the courtesy below depends on it, not the release
        if size > self._record_length:
            # Waiters appended to the file while we held it: step aside for a moment after
            # this release, or a holder that locks again at once would starve them.
            self._yield_until = time.monotonic() + _YIELD_TIME
            self._note_contention()
        try:
            # Unlink while still holding the OS lock: a waiter that opened the old inode and
            # gets its OS lock after us finds the path no longer names it and retries,
            # instead of believing it holds a lock nobody else can see.
            # An lstat that fails for another reason than absence cannot tell whose file
            # the path names now: leave it to the stale rules rather than risk deleting
            # another holder's (this process breaks its own leftover at once).
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._held_inode:
                _unlink(self.path)
            else:
                _LOG.warning("lock file %s was replaced by another process while held", self._shown)
        except OSError as error:
            _LOG.warning(
                "could not remove lock file %s (%s); it will be broken as stale",
                self._shown,
                error.strerror,
            )

    def _acquire_file(self, deadline: float | None) -> bool:
        """Loop until this process holds the lock file; return whether it had to wait."""
        self._step_aside(deadline)
        poll = _FIRST_POLL
        watch = _StaleWatch()
        events: _DirectoryEvents | None = None
        ticket = _Ticket(time.monotonic_ns())
        waited = False
        quick_retries = 0
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
                retry_now = fd is None and self._break_if_stale(watch)
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    raise LockTimeoutError(str(self.path), self.timeout or 0.0, self.holder_pid())
                if retry_now:
                    quick_retries = _retry_soon(quick_retries)
                    continue
                self._note_contention()
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
                with interruptible():
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
            _LOG.debug("waiting for %s (held by pid %s)", self._shown, self.holder_pid())

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
                # Not at exit (atexit=False): a write flushed at exit may still need it, and
                # the process's end closes the descriptor anyway.
                weakref.finalize(self, self._events.close).atexit = False
        if self._events and self._events.closed:
            self._events = False  # broken (a descriptor error): poll from now on
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
            with interruptible():
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
        if not os.path.lexists(self.path):
            with interruptible():
                events.wait(_CAME, left)

    def _create(self) -> int | None:
        """Create the lock file exclusively; ``None`` if something is at the path already.

        O_EXCL never follows a symbolic link: a link at the path, dangling or not, counts as
        existing, and :meth:`_break_if_stale` then says what it is.
        """
        try:
            return os.open(self.path, _CREATE_FLAGS, FILE_MODE)
        except FileExistsError:
            return None
        except FileNotFoundError:
            try:
                make_private_directories(self.path.parent)
                return os.open(self.path, _CREATE_FLAGS, FILE_MODE)
            except FileExistsError:
                return None
            except OSError as error:
                raise self._error("create lock file", error) from None
        except OSError as error:
            raise self._error("create lock file", error) from None

    def _lock_created(self, fd: int, deadline: float | None) -> bool:
        """Hold the OS lock on a file just created; ``False`` (fd closed) to start over.

        On any failure the file just created is deleted again: a failed acquire leaves no
        lock file that would make the next process wait.
        """
        inode: tuple[int, int] | None = None
        try:
            created = os.fstat(fd)
            inode = (created.st_dev, created.st_ino)
            _HELD_HERE.add(inode)
            # The umask filtered the creation mode; peers must be able to hand in tickets.
            os.fchmod(fd, FILE_MODE)
            # Record the holder before anything else, so a waiter examining the file always
            # finds a live pid in it and leaves it alone.
            record = f"{os.getpid()} {sys.argv[0] if sys.argv else ''}".encode()
            _write_all(fd, record)
            self._record_length = len(record)
            while not _try_os_lock(fd, self.path):
                # Someone is examining this new file (a stale check holds the OS lock for
                # microseconds); wait for them, not for the full poll interval.
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockTimeoutError(str(self.path), self.timeout or 0.0, None)
                with interruptible():
                    time.sleep(_FIRST_POLL)
            if not _names_inode(self.path, inode):
                # A breaker removed the file between our create and our lock. Whoever owns
                # the path now is the holder; ours is an orphan.
                _HELD_HERE.discard(inode)
                os.close(fd)
                return False
        except BaseException as error:
            if inode is not None:
                _HELD_HERE.discard(inode)
            try:
                # Without an inode (fstat failed) the path is still ours: we created it
                # exclusively a moment ago, and breakers wait far longer before they act.
                if inode is None or _names_inode(self.path, inode):
                    _unlink(self.path)
            except OSError:
                pass
            os.close(fd)
            if isinstance(error, OSError) and not isinstance(error, CacheFileError):
                raise self._error("write lock file", error) from None
            raise
        self._fd = fd
        self._held_inode = inode
        return True

    def _break_if_stale(self, watch: _StaleWatch) -> bool:
        """Remove the lock file if its holder is gone; ``True`` means retry at once."""
        try:
            fd, st = open_regular(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        except NotRegularFileError as error:
            raise self._refusal(error.kind) from None
        except OSError as error:
            raise self._error("inspect lock file", error) from None
        try:
            if st.st_nlink > 1:
                raise self._refusal(f"a file with {st.st_nlink} names (hard links)")
            pid = _parse_pid(os.pread(fd, _RECORD_BYTES, 0))
        except OSError as error:
            if isinstance(error, CacheFileError):
                raise
            raise self._error("inspect lock file", error) from None
        finally:
            os.close(fd)
        now = time.monotonic()
        # The holder's pid, not size, mtime or the rest of the record: waiters append to
        # the file to say they wait, and content that keeps changing must not keep a file
        # whose holder holds no OS lock alive for ever.
        identity = (st.st_dev, st.st_ino, pid)
        if identity != watch.identity:
            # A new holder (every holder creates a new file): start observing it afresh.
            watch.identity, watch.since, watch.next_probe = identity, now, now + STALE_CHECK_AFTER
            return False
        if now < watch.next_probe:
            return False
        watch.next_probe = now + STALE_CHECK_AFTER
        return self._examine_holder(identity, now - watch.since)

    def _examine_holder(self, identity: tuple[int, int, int | None], age: float) -> bool:
        try:
            fd, st = open_regular(self.path, os.O_RDWR)
        except OSError:
            return True  # gone or replaced: look again from the start
        try:
            if (st.st_dev, st.st_ino) != identity[:2]:
                return True
            # A live holder of the OS-lock family keeps its lock; failing to get it is proof
            # of life, and holding it keeps any second breaker out while we decide.
            if not _try_os_lock(fd, self.path):
                return False
            try:
                return self._break_unless_alive(fd, st, age)
            finally:
                portalocker.unlock(_Descriptor(fd))
        except OSError as error:
            if isinstance(error, CacheFileError):
                raise
            raise self._error("inspect lock file", error) from None
        finally:
            os.close(fd)

    def _break_unless_alive(self, fd: int, st: os.stat_result, age: float) -> bool:
        pid = _parse_pid(os.pread(fd, _RECORD_BYTES, 0))
        # Our own pid on a file no instance of this process holds is a leftover of ours.
        ours_left = pid == os.getpid() and (st.st_dev, st.st_ino) not in _HELD_HERE
        dead = pid is not None and (ours_left or not pid_is_running(pid))
        # Every peer records its pid right after creating the file (msal-extensions'
        # portalocker flavour a moment later); no OS lock and still no pid after a while
        # means its creator died in between.
        abandoned = pid is None and age >= NO_PID_GRACE
        if not (dead or abandoned or age >= self.stale_grace):
            return False
        if not _names_inode(self.path, (st.st_dev, st.st_ino)):
            return True
        _unlink(self.path)
        self.broken += 1
        _LOG.warning(
            "removed stale lock file %s left by %s",
            self._shown,
            f"dead process {pid}" if dead else f"pid {pid} after {age:.1f} s unchanged",
        )
        return True

    def _error(self, operation: str, error: OSError) -> CacheFileError:
        return CacheFileError.from_os_error(self.path, operation, error)

    def _refusal(self, kind: str) -> CacheFileError:
        return CacheFileError(
            str(self.path),
            "lock",
            f"the lock file is {kind}, which no MSAL tool creates: remove it",
        )

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
        self._owner = None
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
        """Put this ticket into the current lock file, once per holder.

        Only into a regular file with one name and room left: a mark must never land in a
        file the lock path was made to point to, nor grow a file someone keeps flooding.
        """
        try:
            fd, st = open_regular(path, os.O_RDWR | os.O_APPEND)
        except OSError:
            return  # released meanwhile, unwritable or not a lock file: nothing to hand in to
        try:
            if (
                (st.st_dev, st.st_ino) == self._inode
                or st.st_nlink != 1
                or st.st_size >= _MAX_LOCK_FILE_BYTES
            ):
                os.close(fd)
                return
            os.write(fd, b"%s%d" % (_WAITING, self._started_ns))
        except OSError:
            os.close(fd)
            return
        self.close()
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)

    def place(self) -> int:
        """How many waiters of the last holder asked before this one (0 if unknown).

        Marks are input from other processes: only well-formed ones count, and the place
        is capped, so a flood of marks cannot stretch anyone's wait.
        """
        if self._fd is None:
            return 0
        try:
            content = os.pread(self._fd, _MAX_LOCK_FILE_BYTES, 0)
        except OSError:
            return 0
        marks = content.split(_WAITING)[1:]
        earlier = sum(1 for mark in marks if mark.isdigit() and int(mark) < self._started_ns)
        return min(earlier, _MAX_PLACE)

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

    @property
    def closed(self) -> bool:
        """Whether the watch is closed (or broke): the waiter must poll instead."""
        return self._fd < 0

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
        """Sleep until the lock file had a ``mask`` event (``True``) or ``timeout`` passed.

        A broken watch returns ``False`` at once (the caller then polls).
        """
        deadline = time.monotonic() + timeout
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            try:
                ready = select.select([self._fd], [], [], left)[0]
            except (OSError, ValueError):
                self._fd = -1
                return False
            if not ready:
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
        """Stop watching (once: a closed number may already name another file)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _read(self) -> list[tuple[int, bytes]]:
        events = []
        try:
            while not self.closed and (data := os.read(self._fd, 65536)):
                offset = 0
                while offset + _EVENT_HEADER.size <= len(data):
                    _, mask, _, length = _EVENT_HEADER.unpack_from(data, offset)
                    start = offset + _EVENT_HEADER.size
                    events.append((mask, data[start : start + length].rstrip(b"\0")))
                    offset = start + length
        except BlockingIOError:
            pass
        except OSError:
            self._fd = -1  # broken: the waiter polls from now on
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
_MAX_PLACE: Final = 16
"""At most this many waiters are let ahead after a release (see ``_Ticket.place``)."""
_MAX_WAKE_WAIT: Final = 0.05
"""Upper bound of one sleep in the kernel: stale checks and network file systems need polls."""


class _StaleWatch:
    """How long the current lock file has been observed unchanged."""

    __slots__ = ("identity", "next_probe", "since")

    def __init__(self) -> None:
        self.identity: tuple[int, int, int | None] | None = None
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


def _try_os_lock(fd: int, path: Path) -> bool:
    try:
        portalocker.lock(_Descriptor(fd), _NON_BLOCKING)
    except portalocker.exceptions.AlreadyLocked:
        return False
    except portalocker.exceptions.LockException as error:
        cause = error.__cause__ if isinstance(error.__cause__, OSError) else None
        raise CacheFileError(
            str(path), "lock", cause.strerror if cause and cause.strerror else str(error)
        ) from None
    return True


def _names_inode(path: Path, inode: tuple[int, int]) -> bool:
    """Whether ``path`` itself (not a link's target) still names ``(device, inode)``."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == inode


def _retry_soon(retries: int) -> int:
    """Pace retries after the lock file went away under us: at once, but never a spin."""
    retries += 1
    if retries % _QUICK_RETRIES == 0:
        with interruptible():
            time.sleep(_FIRST_POLL)
    return retries


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
