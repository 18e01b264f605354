"""The coherent local copy of the Redis store: server-pushed invalidation, one channel each.

A cache hit must cost no network round trip, yet see every other instance's writes. Redis
pushes that knowledge: a connection in *broadcast tracking* mode (``CLIENT TRACKING ON
BCAST PREFIX p``) is sent the name of every key under ``p`` that anyone modifies, deletes,
expires or flushes. One :class:`Tracker` per process, server and prefix keeps such a
connection (subscribed to ``__redis__:invalidate``, RESP2, so it works whatever protocol
the application's client speaks) and counts, per key, the invalidations it has seen.

A store's *version* is a :meth:`Tracker.stamp` taken **before** it reads the key: the
channel's epoch (bumped at every reconnection) and the key's invalidation count. A write
the server ran before that read reached us before the stamp or is already counted in it;
a write it ran after the read sends an invalidation that changes the stamp. So "the stamp
did not change" proves "no write since the bytes were read", as long as the channel was up
the whole time, which the epoch proves.

The stamp is read by the hot path (no lock of the glue's, no round trip), so pushes that
reached this host but were not counted yet must not be missed: the reader thread counts
them holding a mutex that :meth:`Tracker.stamp` takes too, and :meth:`Tracker.stamp`
first checks the channel's socket for unread bytes (one non-blocking ``poll``) and counts
them itself if there are any. It answers ``None`` (meaning: make the round trip) when the
reader has been counting for more than a few milliseconds, when the channel is down, or
when the server has not answered a heartbeat for two heartbeat periods (a silent network
cut ages the copy out).
"""

from __future__ import annotations

import collections
import logging
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Hashable
from typing import Any, Final

import redis

from ._text import printable

__all__ = ["Tracker", "tracker_for"]

_LOG: Final = logging.getLogger("msal_persist")
_CHANNEL: Final = b"__redis__:invalidate"
_RECONNECT_FIRST: Final = 0.05
_RECONNECT_MAX: Final = 1.0
_HOT_WAIT: Final = 0.01
"""How long a read waits for the reader thread to finish counting pushes."""
_READY_WAIT: Final = 2.0
"""How long the first read waits for a new channel to come up before going without it."""

_TRACKERS: weakref.WeakValueDictionary[tuple[int, bytes, float], Tracker] = (
    weakref.WeakValueDictionary()
)
_TRACKERS_LOCK = threading.Lock()


_RECENT: collections.OrderedDict[tuple[int, bytes, float], Tracker] = collections.OrderedDict()
_KEEP_RECENT: Final = 32
"""Channels kept open after their last store went, so that a store per request (the
web-app pattern) finds its channel up; older unused ones close."""


def tracker_for(pool: redis.ConnectionPool, prefix: bytes, heartbeat: float) -> Tracker:
    """The process's channel for keys under ``prefix`` on ``pool``'s server (shared)."""
    with _TRACKERS_LOCK:
        key = (id(pool), prefix, heartbeat)
        tracker = _TRACKERS.get(key)
        if tracker is None or tracker.pool is not pool:
            tracker = Tracker(pool, prefix, heartbeat)
            _TRACKERS[key] = tracker
        _RECENT[key] = tracker
        _RECENT.move_to_end(key)
        while len(_RECENT) > _KEEP_RECENT:
            _RECENT.popitem(last=False)
        return tracker


class Tracker:
    """One invalidation channel: a connection, a reader thread and the counts it keeps."""

    def __init__(self, pool: redis.ConnectionPool, prefix: bytes, heartbeat: float) -> None:
        """Describe the channel; :meth:`ensure_running` opens it."""
        self.pool = pool
        self.prefix = prefix
        self.heartbeat = heartbeat
        self._mutex = threading.Lock()  # taken by the reader while it counts pushes
        self._connection: Any = None
        self._poller: Any = None  # the hot path's poll object (only used under _mutex)
        self._reader_poller: Any = None  # the reader thread's
        self._epoch = 0
        self._healthy = False
        self._last_heard = 0.0
        self._ping_sent: float | None = None
        self._generations: dict[bytes, int] = {}
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._refused = False
        self.invalidations = 0
        """How many invalidated keys this channel counted (for tests and benchmarks)."""

    # -- the hot path ---------------------------------------------------------------------

    def stamp(self, key: bytes) -> Hashable | None:
        """What a copy of ``key`` read from now on is valid for; ``None``: do not keep it."""
        # The reader holds the mutex for microseconds while it counts pushes; waiting that
        # long is cheaper than the round trip that giving up would cost.
        if not self._mutex.acquire(timeout=_HOT_WAIT):
            return None
        try:
            return self._stamp_locked(key)
        finally:
            self._mutex.release()

    def settle(self, key: bytes) -> Hashable | None:
        """:meth:`stamp` ``key`` after a write of our own, waiting longer for the mutex.

        The write's own push usually arrived with the reply; the stamp counts it, which
        spares the next read a round trip to fetch what we just wrote.
        """
        if not self._mutex.acquire(timeout=self.heartbeat):
            return None
        try:
            return self._stamp_locked(key)
        finally:
            self._mutex.release()

    def _stamp_locked(self, key: bytes) -> Hashable | None:
        if not self._healthy or time.monotonic() - self._last_heard > 2 * self.heartbeat:
            return None
        if self._poller.poll(0):
            # Pushes arrived that the reader thread has not counted yet: count them now
            # (we hold its mutex), so that the stamp reflects every push on this host.
            try:
                self._drain_locked()
            except (redis.RedisError, OSError):
                self._healthy = False  # the reader thread sees the error too and reconnects
                return None
        return (self._epoch, self._generations.setdefault(key, 0))

    # -- the channel ----------------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start the reader thread (again after a fork or a close); wait a little for it."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with _TRACKERS_LOCK:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._ready.clear()
            # The thread holds the tracker weakly: once no store uses it, it goes away
            # and the thread ends, closing the connection, within a heartbeat.
            self._thread = threading.Thread(
                target=_serve, args=(weakref.ref(self),), name="msal-persist-redis", daemon=True
            )
            self._thread.start()
        self._ready.wait(_READY_WAIT)

    def close(self) -> None:
        """Stop the reader thread and close the channel."""
        self._stop.set()
        with self._mutex:
            sock = getattr(self._connection, "_sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the reader from its poll
                except OSError:
                    pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * self.heartbeat + 1)
        self._drop()

    def _failed(self, error: Exception) -> None:
        if isinstance(error, redis.ResponseError):
            # Refused, not lost (Redis < 6, an ACL user without CLIENT or SUBSCRIBE): every
            # read then makes a round trip, which the user should hear about once.
            if not self._refused:
                self._refused = True
                _LOG.warning(
                    "the Redis server refused client tracking (%s): every token cache read "
                    "makes a round trip",
                    printable(str(error)),
                )
        else:
            _LOG.debug("redis invalidation channel lost (%s); reconnecting", type(error))
        self._ready.set()  # a first read waiting for the channel goes on without it
        self._drop()

    def _subscribe(self) -> None:
        kwargs = {
            key: value
            for key, value in self.pool.connection_kwargs.items()
            if not key.startswith("maint")  # push-based maintenance needs RESP3
        }
        kwargs.update(protocol=2, decode_responses=False)
        kwargs.setdefault("socket_timeout", self.heartbeat)
        connection = self.pool.connection_class(**kwargs)
        try:
            connection.connect()
            connection.send_command("CLIENT", "ID")
            own_id = connection.read_response()
            # Redirected to itself: RESP2 delivers invalidations as Pub/Sub messages.
            connection.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST", "PREFIX", self.prefix
            )
            connection.read_response()
            connection.send_command("SUBSCRIBE", _CHANNEL)
            connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        poller, reader_poller = select.poll(), select.poll()  # one per polling thread
        poller.register(connection._sock, select.POLLIN)  # noqa: SLF001
        reader_poller.register(connection._sock, select.POLLIN)  # noqa: SLF001
        with self._mutex:
            self._connection, self._poller = connection, poller
            self._reader_poller = reader_poller
            self._epoch += 1  # every copy validated on an earlier channel is now unproven
            self._last_heard, self._ping_sent = time.monotonic(), None
            self._healthy = True
        self._ready.set()
        _LOG.debug("redis invalidation channel up (epoch %d)", self._epoch)

    def _listen_once(self) -> None:
        """Wait for pushes for at most one heartbeat; count them, or check the server."""
        connection, poller = self._connection, self._reader_poller
        since = self._last_heard if self._ping_sent is None else self._ping_sent
        wait = max(0.0, since + self.heartbeat - time.monotonic())
        events = poller.poll(wait * 1000)
        with self._mutex:
            if not self._healthy:
                raise ConnectionError("the channel failed while a reader drained it")
            if events:
                self._drain_locked()
            now = time.monotonic()
            if self._ping_sent is None and now - self._last_heard >= self.heartbeat:
                connection.send_command("PING")
                self._ping_sent = now
            elif self._ping_sent is not None and now - self._ping_sent >= self.heartbeat:
                raise TimeoutError("the server did not answer a heartbeat")

    def _drain_locked(self) -> None:
        connection = self._connection
        while connection.can_read(timeout=0):
            message = connection.read_response()
            self._last_heard = time.monotonic()
            kind = message[0] if isinstance(message, list) and message else None
            if kind == b"pong":
                self._ping_sent = None
            elif kind == b"message" and message[1] == _CHANNEL:
                self._invalidate(message[2])

    def _invalidate(self, keys: list[bytes] | None) -> None:
        generations = self._generations
        if keys is None:  # FLUSHDB / FLUSHALL: every key changed
            for key in generations:
                generations[key] += 1
            self.invalidations += len(generations)
            return
        for key in keys:
            if key in generations:
                generations[key] += 1
                self.invalidations += 1

    def _drop(self) -> None:
        with self._mutex:
            self._healthy = False
            connection, self._connection, self._poller = self._connection, None, None
        if connection is not None:
            connection.disconnect()

    def __del__(self) -> None:
        connection = getattr(self, "_connection", None)
        if connection is not None:
            try:
                connection.disconnect()
            except Exception:  # noqa: BLE001, S110 - nothing to tell anyone at collection time
                pass

    def _forget_after_fork(self) -> None:
        # The reader thread does not exist in a child; the socket is the parent's.
        self._mutex = threading.Lock()
        self._healthy = False
        self._connection = self._poller = None
        self._thread = None
        self._ready = threading.Event()


def _serve(ref: weakref.ref[Tracker]) -> None:
    """The reader thread: keep ``ref``'s channel up while the tracker lives and runs."""
    delay = _RECONNECT_FIRST
    while True:
        tracker = ref()
        if tracker is None or tracker._stop.is_set():  # noqa: SLF001 - its own thread
            return
        try:
            if tracker._connection is None:  # noqa: SLF001
                tracker._subscribe()  # noqa: SLF001
                delay = _RECONNECT_FIRST
            tracker._listen_once()  # noqa: SLF001
        except Exception as error:  # noqa: BLE001 - any failure means: reconnect
            tracker._failed(error)  # noqa: SLF001
            stop = tracker._stop  # noqa: SLF001
            del tracker  # hold no reference while waiting
            stop.wait(delay)
            delay = min(delay * 2, _RECONNECT_MAX)
        else:
            del tracker


def _after_fork_in_child() -> None:
    global _TRACKERS_LOCK  # noqa: PLW0603 - a lock held by a parent's thread at fork time
    _TRACKERS_LOCK = threading.Lock()
    for tracker in list(_TRACKERS.values()):
        tracker._forget_after_fork()  # noqa: SLF001 - module-private protocol


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
