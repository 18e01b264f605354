"""How processes waiting for the lock take turns, and how long each one sleeps.

The lock protocol (:mod:`~msal_persist._lock`) decides *whether* a process holds the lock;
this module decides *when* a waiter tries again. The decisions are pure functions of what
was read and of the clock value passed in (:func:`place_in_line`, :func:`gap_wait`,
:func:`step_aside_time`, :func:`next_poll`, :func:`poll_pause`), so they can be tuned and
tested without a file system; the few functions that sleep only apply them.

- **Tickets.** A waiter appends ``+<CLOCK_MONOTONIC ns when it started waiting>`` to the
  current lock file (that clock is the same for every process on a host). At a release,
  every waiter reads the marks of the file just deleted: its place in line is the number of
  earlier marks, and each place waits :data:`TURN` longer before trying. Marks come from
  other processes, so reads are bounded and the place is capped.
- **Stepping aside.** A holder that finds marks in its own file at release keeps off the
  lock for up to :data:`YIELD_TIME`, or until someone else takes it, so that a process
  locking back to back cannot starve the others.
- **Gap windows.** msal-extensions and msal-node poll and leave no trace while they wait.
  Under sustained contention msal-persist processes keep off the lock during windows of the
  shared monotonic clock, so such a poller always finds it free in time.
- **Back-off.** Without inotify, waiters poll with a short, doubling, jittered sleep.

This module knows nothing of msal, of the cache file, or of who holds the lock.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Final

from ._files import open_regular
from ._inotify import CAME, GONE, DirectoryEvents, DirectoryWatch
from ._signals import interruptible

__all__ = [
    "FIRST_POLL",
    "GAP_LENGTH",
    "GAP_PERIOD",
    "MAX_LOCK_FILE_BYTES",
    "MAX_PLACE",
    "MAX_POLL",
    "MAX_WAKE_WAIT",
    "NAP_SHARE",
    "QUICK_RETRIES",
    "STILL_CONTENDED",
    "SUSTAINED_CONTENTION",
    "TURN",
    "WAITING_MARK",
    "YIELD_TIME",
    "Contention",
    "Ticket",
    "Waiter",
    "bounded",
    "gap_wait",
    "mark",
    "nap_time",
    "next_poll",
    "note_release",
    "place_in_line",
    "poll_pause",
    "step_aside",
    "step_aside_time",
    "wait_turn",
    "waiters_marked",
]

# Holders keep the lock for about a millisecond, so the first polls must be that fine; the
# cap keeps 32 pollers on 2 cores from burning the CPU the holder needs.
FIRST_POLL: Final = 0.0002
"""Seconds of the first poll (also the pause between bursts of quick retries)."""
MAX_POLL: Final = 0.004
"""Seconds the doubling poll interval grows to, at most (before jitter)."""
MAX_WAKE_WAIT: Final = 0.05
"""Upper bound of one sleep in the kernel: stale checks and network file systems need polls."""

TURN: Final = 0.00015
"""How much later each waiter tries than the one before it in line, after a release."""
MAX_PLACE: Final = 16
"""At most this many waiters are let ahead after a release (see :func:`place_in_line`)."""
WAITING_MARK: Final = b"+"
"""What a waiter appends to the lock file, before its start time, to say that it waits."""
MAX_LOCK_FILE_BYTES: Final = 4096
"""Past this size a lock file takes no more waiter marks, and no more of it is read."""

YIELD_TIME: Final = 0.005
"""How long a holder that others waited for stands aside before it may lock again."""

# msal-extensions and msal-node poll every 0.1-0.25 s and give up after 5 s. A window longer
# than their longest interval is sure to catch one of their polls, and one every 1.5 s comes
# three times before they give up.
GAP_PERIOD: Final = 1.5
"""Seconds between the starts of two gap windows on the host's monotonic clock."""
GAP_LENGTH: Final = 0.3
"""Seconds each gap window lasts."""
SUSTAINED_CONTENTION: Final = 0.5
"""Seconds of unbroken contention after which a process keeps off during gap windows."""
STILL_CONTENDED: Final = 0.25
"""Contended acquisitions this close together count as one sustained contention."""

QUICK_RETRIES: Final = 64
"""Retries without a pause (the lock file vanished under us) before the next one sleeps."""

NAP_SHARE: Final = 0.5
"""Share of the releases still ahead of it that a waiter far back in line sleeps through."""


def mark(started_ns: int) -> bytes:
    """Return the mark a waiter that started waiting at ``started_ns`` appends."""
    return b"%s%d" % (WAITING_MARK, started_ns)


def place_in_line(content: bytes, started_ns: int) -> int:
    """How many well-formed marks in ``content`` are earlier than ``started_ns``, capped.

    Marks are input from other processes: malformed ones do not count, and the cap keeps a
    flood of marks from stretching anyone's wait past :data:`MAX_PLACE` turns.
    """
    marks = content.split(WAITING_MARK)[1:]
    earlier = sum(1 for m in marks if m.isdigit() and int(m) < started_ns)
    return min(earlier, MAX_PLACE)


def turn_delay(place: int) -> float:
    """Seconds a waiter at ``place`` gives the ones before it after a release."""
    return place * TURN


def waiters_marked(size: int, record_length: int) -> bool:
    """Whether a lock file of ``size`` bytes holds more than its holder's own record.

    Only waiters append to a lock file, so anything past the record means someone waited:
    the holder then steps aside after its release.
    """
    return size > record_length


def step_aside_time(now: float, yield_until: float, deadline: float | None) -> float:
    """Seconds a process must still leave the lock to others (``<= 0``: none), by ``deadline``."""
    left = yield_until - now
    if deadline is not None:
        left = min(left, deadline - now)
    return left


def gap_wait(now: float, contended_since: float, contended_last: float) -> float:
    """Seconds to keep off the lock from ``now`` so that polling peers get in (0.0: none).

    Only under sustained contention (contended for :data:`SUSTAINED_CONTENTION` seconds,
    with no pause longer than :data:`STILL_CONTENDED`), and only inside the first
    :data:`GAP_LENGTH` of each :data:`GAP_PERIOD`. ``now`` is the host's monotonic clock,
    the same in every process, so every msal-persist process keeps off at the same moments
    and a poller that looks then finds the lock free.
    """
    if now - contended_last > STILL_CONTENDED or now - contended_since < SUSTAINED_CONTENTION:
        return 0.0
    phase = now % GAP_PERIOD
    return GAP_LENGTH - phase if phase < GAP_LENGTH else 0.0


def nap_time(place: int, period: float) -> float:
    """Seconds a waiter at ``place`` may sleep without watching the lock (0.0: none).

    Every release wakes every watching waiter, and on a machine with fewer cores than
    waiters their wake-ups take the CPU the holder needs. A waiter with others ahead of it
    sleeps through :data:`NAP_SHARE` of the releases still to come before its turn
    (``period`` is the time between two releases, as seen lately), then tries and watches
    again: it is back well before its turn, and only the waiter next in line watches each
    release closely.
    """
    if place < 2 or period <= 0:
        return 0.0
    return min((place - 1) * period * NAP_SHARE, MAX_WAKE_WAIT)


def next_poll(poll: float) -> float:
    """The poll interval after ``poll``: doubled, up to :data:`MAX_POLL`."""
    return min(poll * 2, MAX_POLL)


def poll_pause(poll: float, remaining: float) -> float:
    """One poll's sleep: ``poll`` give or take half, never past ``remaining`` seconds.

    The jitter keeps pollers that started together from retrying in lockstep.
    """
    return min(poll * random.uniform(0.5, 1.5), remaining)  # noqa: S311 - jitter, not secrecy


def bounded(seconds: float, deadline: float | None) -> float:
    """``seconds``, cut short so as to end by ``deadline`` (monotonic), never negative."""
    return seconds if deadline is None else max(0.0, min(seconds, deadline - time.monotonic()))


class Contention:
    """One lock's recent history of waiting, which decides its courtesy to the others.

    Times are the host's monotonic clock, passed in, so the decisions can be tested without
    sleeping.

    Attributes:
        since: When the current spell of contention began (-1.0: none yet).
        last: When this lock last met contention (-1.0: never).
        yield_until: Until when this lock leaves the lock file to others after a release.
        period: Seconds between two releases by others, lately (0.0: not known).
    """

    __slots__ = ("last", "last_release", "period", "since", "yield_until")

    def __init__(self) -> None:
        """Start with no history."""
        self.forget()

    def forget(self) -> None:
        """Drop the history (a forked child's waits are its own)."""
        self.since = self.last = -1.0
        self.yield_until = 0.0
        self.last_release = -1.0
        self.period = 0.0

    def note(self, now: float) -> None:
        """Record contention at ``now``; a pause past :data:`STILL_CONTENDED` starts a new spell."""
        if now - self.last > STILL_CONTENDED:
            self.since = now
        self.last = now

    def saw_release(self, now: float) -> None:
        """Record a release by another holder, seen while waiting at ``now``."""
        gap = now - self.last_release
        self.last_release = now
        if gap > MAX_WAKE_WAIT:
            return  # not back to back: no measure of how fast the line moves
        self.period = gap if self.period <= 0 else (self.period + gap) / 2

    def released_to_waiters(self, now: float) -> None:
        """Record a release others waited for: step aside for :data:`YIELD_TIME` from ``now``."""
        self.yield_until = now + YIELD_TIME
        self.note(now)


class Ticket:
    """A waiter's place in line, written into the lock file of each holder it waits for.

    The waiter keeps the file it handed its mark in to open: when the holder releases (and
    deletes the file), the marks are still there to read through that handle. The marks
    also tell the holder, at release, that someone waits.
    """

    __slots__ = ("_fd", "_inode", "_started_ns")

    def __init__(self, started_ns: int) -> None:
        """Take a ticket for a wait that started at ``started_ns`` (``CLOCK_MONOTONIC``)."""
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
                or st.st_size >= MAX_LOCK_FILE_BYTES
            ):
                os.close(fd)
                return
            os.write(fd, mark(self._started_ns))
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
            content = os.pread(self._fd, MAX_LOCK_FILE_BYTES, 0)
        except OSError:
            return 0
        return place_in_line(content, self._started_ns)

    def close(self) -> None:
        """Let go of the lock file the ticket was handed in to."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def wait_turn(
    events: DirectoryEvents,
    ticket: Ticket,
    path: Path,
    deadline: float | None,
    contention: Contention,
) -> None:
    """Sleep in the kernel until it is this waiter's turn to try, or a poll is due.

    A watching waiter wakes at each release: the one that asked first tries at once; the
    others give it a moment and, once it has the lock, go back to waiting without trying,
    so the lock goes round in the order it was asked for. Waiters further back nap through
    some of the releases ahead of them (:func:`nap_time`), then try again.
    """
    while True:
        ticket.hand_in(path)
        if not events.wait(GONE, bounded(MAX_WAKE_WAIT, deadline)):
            return  # time for a stale check (or a poll the kernel could not spare)
        contention.saw_release(time.monotonic())
        place = ticket.place()
        nap = nap_time(place, contention.period)
        if nap > 0:
            time.sleep(bounded(nap, deadline))
            return  # the line moved on meanwhile: try, then watch again
        if not place or not events.wait(CAME, bounded(turn_delay(place), deadline)):
            return  # our turn, or the ones before us did not come: try


def step_aside(
    contention: Contention, watch: DirectoryWatch, path: Path, deadline: float | None
) -> None:
    """After a release that others waited for, let one of them take the lock first."""
    left = step_aside_time(time.monotonic(), contention.yield_until, deadline)
    if left <= 0 or (events := watch.events()) is None:
        return
    events.clear()
    # A waiter that has taken it already needs no more room (our attempt then waits its turn).
    if not os.path.lexists(path):
        with interruptible():
            events.wait(CAME, left)


def note_release(contention: Contention, size: int, record_length: int) -> None:
    """At a release, remember to step aside if waiters marked the lock file (``size`` bytes).

    Without that, a holder that locks again at once would starve those who waited.
    """
    if waiters_marked(size, record_length):
        contention.released_to_waiters(time.monotonic())


class Waiter:
    """The waiting of one acquisition: when it tries again, and how it sleeps meanwhile.

    Made when an acquisition starts (its ticket's time is that moment). The first failed
    attempt opens the directory watch; every later one sleeps until its turn (with a
    watch) or for one jittered poll (without).

    Args:
        path: The lock file.
        contention: The lock's history of waiting, which this acquisition adds to.
        watch: The lock's directory watch (opened at the first wait that can use it).
        deadline: When the acquisition gives up (``time.monotonic()``), ``None`` for never.

    Attributes:
        waited: Whether this acquisition found the lock held at least once.
    """

    __slots__ = (
        "_contention",
        "_deadline",
        "_events",
        "_path",
        "_poll",
        "_quick_retries",
        "_started_ns",
        "_ticket",
        "_watch",
        "waited",
    )

    def __init__(
        self,
        path: Path,
        contention: Contention,
        watch: DirectoryWatch,
        deadline: float | None,
    ) -> None:
        """Start waiting now (nothing is slept or opened yet)."""
        self._path = path
        self._contention = contention
        self._deadline = deadline
        self._watch = watch
        self._started_ns = time.monotonic_ns()
        self._ticket: Ticket | None = None  # made at the first sleep: most waits never sleep
        self._events: DirectoryEvents | None = None
        self._poll = FIRST_POLL
        self._quick_retries = 0
        self.waited = False

    def before_attempt(self) -> None:
        """Get ready for an attempt: forget old events, keep off during a gap window."""
        if self._events is not None:
            self._events.clear()
        contention = self._contention
        pause = gap_wait(time.monotonic(), contention.since, contention.last)
        if pause > 0:
            with interruptible():
                time.sleep(bounded(pause, self._deadline))

    def took_lock(self) -> bool:
        """Record that the attempt succeeded; return whether the lock had to be waited for."""
        if self.waited:
            self._contention.note(time.monotonic())
        return self.waited

    def retry_soon(self) -> None:
        """Pace retries after the lock file went away under us: at once, but never a spin."""
        self._quick_retries += 1
        if self._quick_retries % QUICK_RETRIES == 0:
            with interruptible():
                time.sleep(FIRST_POLL)

    def wait(self, now: float) -> None:
        """Wait after an attempt that found the lock held at ``now``, until time to retry."""
        self._contention.note(now)
        if not self.waited:
            self.waited = True
            self._events = self._watch.events()
            if self._events is not None:
                # Events count from now on: one more attempt before the first wait, so that
                # no release slips between the failed attempt and the wait.
                self._events.clear()
                return
        remaining = MAX_WAKE_WAIT if self._deadline is None else self._deadline - now
        with interruptible():
            if self._events is not None:
                if self._ticket is None:
                    self._ticket = Ticket(self._started_ns)
                wait_turn(self._events, self._ticket, self._path, self._deadline, self._contention)
                return
            time.sleep(poll_pause(self._poll, remaining))
        self._poll = next_poll(self._poll)

    def close(self) -> None:
        """Let go of what the wait holds open (the lock file its ticket went into)."""
        if self._ticket is not None:
            self._ticket.close()
