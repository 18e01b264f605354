"""Wake a lock waiter the moment the lock file goes or comes: a small Linux inotify binding.

Every MSAL peer releases the lock by deleting its file, so a waiter can sleep in the kernel
on a watch of the directory and wake within microseconds of a release, using no CPU while
it waits. Where inotify is missing (other systems, the per-user instance limit) or breaks
(a closed or failing descriptor), :class:`DirectoryEvents` says so and the waiter polls.

Why a private binding and not the ``inotify_simple`` package: what is needed here is three
libc calls and the event header, about as many lines as that package itself, whose author
invites copying it. Around them this module still has to do what no wrapper does for us:
keep only the lock file's own name, loop to one deadline across reads, and degrade to
polling instead of raising when the descriptor breaks. A Linux-only runtime dependency (with
its platform marker) in a library that guards tokens would buy none of that.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
import time
import weakref
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "CAME",
    "GONE",
    "IN_CREATE",
    "IN_DELETE",
    "IN_MOVED_FROM",
    "IN_MOVED_TO",
    "DirectoryEvents",
    "DirectoryWatch",
]

# From <sys/inotify.h>; the kernel ABI, the same on every Linux architecture.
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200

GONE: Final = IN_DELETE | IN_MOVED_FROM
"""The name left the directory: a peer released the lock (or renamed its file away)."""
CAME: Final = IN_CREATE | IN_MOVED_TO
"""The name appeared in the directory: someone took the lock."""

_EVENT_HEADER: Final = struct.Struct("iIII")  # wd, mask, cookie, len (then the name)
_READ_SIZE: Final = 65536


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    except (OSError, AttributeError):
        return None  # a libc without these symbols: waiters poll instead
    return libc


_LIBC: Final = _load_libc()


class DirectoryEvents:
    """Tells a waiter when one name in a directory goes or comes.

    One inotify instance serves a lock for its whole life: closing one waits for an RCU
    grace period (about 15 ms here), far too slow to pay per acquisition. Network file
    systems report no remote change through inotify, so callers bound every wait and look
    at the file system themselves between waits.
    """

    __slots__ = ("__weakref__", "_fd", "_name")

    def __init__(self, fd: int, name: bytes) -> None:
        """Wrap an inotify descriptor that watches the directory holding ``name``."""
        self._fd = fd
        self._name = name

    @property
    def closed(self) -> bool:
        """Whether the watch is closed (or broke): the waiter must poll instead."""
        return self._fd < 0

    @classmethod
    def open(cls, path: Path) -> DirectoryEvents | None:
        """Start watching ``path``'s directory; ``None`` where that is impossible."""
        if _LIBC is None:
            return None
        # Non-blocking: draining the queue must never hang a waiter; close-on-exec: a child
        # that execs must not keep the instance (and its kernel memory) alive.
        fd = _LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        if _LIBC.inotify_add_watch(fd, os.fsencode(path.parent), GONE | CAME) < 0:
            os.close(fd)
            return None
        return cls(fd, os.fsencode(path.name))

    def wait(self, mask: int, timeout: float) -> bool:
        """Sleep until the name had a ``mask`` event (``True``) or ``timeout`` passed.

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
            while not self.closed and (data := os.read(self._fd, _READ_SIZE)):
                offset = 0
                while offset + _EVENT_HEADER.size <= len(data):
                    _, mask, _, length = _EVENT_HEADER.unpack_from(data, offset)
                    start = offset + _EVENT_HEADER.size
                    events.append((mask, data[start : start + length].rstrip(b"\0")))
                    offset = start + length
        except BlockingIOError:
            pass  # the queue is drained
        except OSError:
            self._fd = -1  # broken: the waiter polls from now on
        return events


class DirectoryWatch:
    """The :class:`DirectoryEvents` of one lock: opened at its first wait, kept for its life.

    Opening costs a descriptor and closing one an RCU grace period, so neither happens per
    acquisition; a lock that never waits never opens one.
    """

    __slots__ = ("__weakref__", "_events", "_path")

    def __init__(self, path: Path) -> None:
        """Watch for ``path`` coming and going, once a wait first asks."""
        self._path = path
        self._events: DirectoryEvents | Literal[False] | None = None

    def events(self) -> DirectoryEvents | None:
        """The open watch, or ``None`` where waiters must poll (no inotify, or it broke)."""
        if self._events is None:
            self._events = DirectoryEvents.open(self._path) or False
            if self._events:
                # Not at exit (atexit=False): a write flushed at exit may still need it, and
                # the process's end closes the descriptor anyway.
                weakref.finalize(self, self._events.close).atexit = False
        if self._events and self._events.closed:
            self._events = False  # broken (a descriptor error): poll from now on
        return self._events or None

    def forget(self) -> None:
        """Drop the watch without closing it: after fork, the parent's queue is shared.

        Reading a queue shared with the parent would steal its events; the child opens
        its own at its first wait.
        """
        self._events = None
