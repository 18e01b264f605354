"""Refresh leases of the Redis store: a key with a token and an expiry, and a failure record.

The lease for key ``K`` of a store whose siblings are ``<s>`` (the store's key with its hash
tag, see :mod:`._redis_store`) is three keys in the store's Redis Cluster hash slot:

- ``<s>:refresh-K`` holds the holder's random token (``"<uuid hex> <host> <pid>"``), set only
  if absent (or already ours: a retried call) with an expiry of the store's ``lease``, so a
  holder that was killed, or lost its network, blocks the others for that long at most;
- ``<s>:refresh-K:handoff``, a list the release pushes one element to, which wakes one
  waiter blocked on it (``BLPOP``) at once, as the store's write lock does; the others poll
  with growing, jittered waits, all bounded by the timeout given;
- ``<s>:refresh-K:failed``, the failure record, written or deleted only by a script that
  checks the token first, with an expiry of :data:`FAILURE_RECORD_TTL` (a hint for the next
  seconds, not data to keep).

There is no renewal while held. A renewal cannot tell a slow refresher from a hung one (its
process is alive in both cases), so it would only turn "killed" into "hung", which the glue
already handles with its second generation of leases after ``refresh_timeout``. Without it, a
refresh that outlives ``lease`` seconds may be done a second time by a waiter, which the glue
tolerates (both tokens are valid; the second write wins). The default ``lease`` (10 s) is
the default ``refresh_timeout``.

Threads of one process share one lease object (the store returns the same object for the
same key), and queue on a thread lock in it before they ask the server: the token on the
server belongs to the thread holding that lock. This module knows nothing of msal or JSON.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

import redis

from ._errors import LeaseExpiredError, StoreUnavailableError
from ._signals import checkpoint, deferred_interrupts, interruptible
from ._waiting import bounded

__all__ = ["FAILURE_RECORD_TTL", "RedisRefreshLease"]

_LOG: Final = logging.getLogger("msal_persist")
_T = TypeVar("_T")

FAILURE_RECORD_TTL: Final = 60.0
"""Seconds a failure record lives on the server (the glue reads it for seconds at most)."""

_WAIT_FIRST: Final = 0.002
_WAIT_MAX: Final = 0.1
"""The longest poll: a waiter notices a lease that expired (no handoff then) this late."""
_THREAD_WAIT: Final = 0.05
"""The slices of a wait for another thread, so that a held-back Ctrl-C gets in between."""

# KEYS[1] lease, KEYS[2] failure record; ARGV[1] token, ARGV[2] expiry (ms). Taken (or ours
# already: a retried call), it returns {1, record}, the record read with the lease; else {0}.
_TAKE: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, redis.call('GET', KEYS[2])}
end
return {0}
"""
# KEYS[1] lease, KEYS[2] handoff list; ARGV[1] token. One element in the list wakes one
# waiter blocked on it at once; the others wake on their own short timeouts.
_GIVE_BACK: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], 1000)
return 1
"""
# KEYS[1] lease, KEYS[2] failure record; ARGV[1] token, ARGV[2] expiry (ms), ARGV[3] the
# record (absent: delete it). 0: the lease is no longer ours, nothing was changed.
_NOTE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == nil then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
end
return 1
"""


class Call(Protocol):
    """The store's way to send a command: counts it, maps redis errors to ours."""

    def __call__(
        self, operation: str, function: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> _T:
        """Run ``function(*args, **kwargs)``; raise StoreUnavailableError on a redis error."""
        ...


_LIVE: weakref.WeakSet[RedisRefreshLease] = weakref.WeakSet()


class RedisRefreshLease:
    """The lease on refreshing one token of a Redis store (see the module docstring).

    Made by :meth:`~msal_persist.RedisStore.refresh_lease`, which passes its own client and
    its way of sending commands (so that they count in its ``round_trips``).

    Args:
        client: The store's ``redis.Redis`` client.
        name: The lease's key, ``<siblings>:refresh-K``; the other keys are named after it.
        expiry: Seconds the lease lasts once taken (the store's ``lease``).
        call: The store's way to send a command.
        shown: How log lines and errors name the lease (never a partition's name).

    Attributes:
        expiry: Seconds the lease lasts once taken; it is not renewed while held.
    """

    def __init__(
        self, client: redis.Redis, name: str, *, expiry: float, call: Call, shown: str
    ) -> None:
        """Describe the lease; nothing is sent to the server until it is taken."""
        self.expiry: Final = expiry
        self._client = client
        self._call = call
        self._shown = shown
        self._lease, self._record_key, self._handoff = name, f"{name}:failed", f"{name}:handoff"
        self._take, self._give_back, self._note = (
            client.register_script(source) for source in (_TAKE, _GIVE_BACK, _NOTE)
        )
        # Threads of this process queue here instead of polling the server.
        self._thread_lock = threading.Lock()
        self._owner: int | None = None
        self._token: str | None = None
        self._unsure: str | None = None  # a token the server may hold for us
        self._record: bytes | None = None  # the failure record read with the lease
        _LIVE.add(self)

    def __repr__(self) -> str:
        """Show the store and the lease key (never a partition's name)."""
        return f"{type(self).__name__}({self._shown!r}, held={self.is_held})"

    @property
    def is_held(self) -> bool:
        """Whether a thread of this process holds the lease (as far as this process knows)."""
        return self._token is not None

    def acquire(self, timeout: float | None) -> bool:
        """Take the lease, waiting up to ``timeout`` seconds (``0``: try once, ``None``: ever).

        Returns whether it is held now; ``False`` means another holder kept it past the
        timeout. Raises (a ``KeyboardInterrupt`` included) holding nothing, with one limit:
        when the server stops answering after it may have set our token, the token stays
        until its expiry (for others; this object takes it back at once).

        Raises:
            ValueError: ``timeout`` is negative.
            StoreUnavailableError: The server refused or did not answer.
        """
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with deferred_interrupts():
                if not self._take_thread_lock(deadline):
                    return False
                if not self._take_lease(deadline):
                    self._owner = None
                    self._thread_lock.release()
                    return False
            return True  # noqa: TRY300 - an interrupt at the return must be caught below too
        except BaseException:
            # Also a Ctrl-C held back until the lease was taken, delivered on leaving the
            # deferral: give back whatever this thread took before letting it through.
            with deferred_interrupts():
                if self._owner == threading.get_ident():
                    self._give_back_all()
            raise

    def release(self) -> None:
        """Give the lease back and wake one waiter; a server error is logged, not raised.

        Raises:
            RuntimeError: This thread does not hold the lease.
        """
        if self._owner != threading.get_ident():
            raise RuntimeError(f"{self._shown} is not held by this thread")
        with deferred_interrupts():
            self._give_back_all()

    def failure(self) -> bytes | None:
        """The failure record (``None``: none, or unreadable); lock-free, never raises."""
        if self._token is not None and self._owner == threading.get_ident():
            # Read with the lease, and only the holder writes it: no round trip.
            return self._record
        try:
            value = self._call("read the refresh failure of", self._client.get, self._record_key)
        except Exception:  # noqa: BLE001 - a lost hint: the waiter then asks the authority itself
            return None
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    def record_failure(self, record: bytes | None) -> None:
        """Leave ``record`` for those waiting (``None`` removes it); only while held.

        Raises:
            RuntimeError: This thread does not hold the lease.
            LeaseExpiredError: The lease expired before (nothing was written).
            StoreUnavailableError: The server refused or did not answer.
        """
        token = self._token
        if self._owner != threading.get_ident() or token is None:
            raise RuntimeError(f"{self._shown} is not held by this thread")
        if record is None and self._record is None:
            # The usual success: there was no record when the lease was taken, and only its
            # holder writes one. No round trip for nothing.
            return
        args: list[Any] = [token, int(FAILURE_RECORD_TTL * 1000)]
        if record is not None:
            args.append(record)
        noted = self._call(
            "note a refresh outcome in",
            self._note,
            keys=[self._lease, self._record_key],
            args=args,
        )
        if not noted:
            raise LeaseExpiredError(self._shown, self.expiry)
        self._record = record

    # -- plumbing -------------------------------------------------------------------------

    def _take_thread_lock(self, deadline: float | None) -> bool:
        # The wait comes in short slices so that a held-back Ctrl-C gets in between them.
        while not self._thread_lock.acquire(timeout=bounded(_THREAD_WAIT, deadline)):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            checkpoint()
        self._owner = threading.get_ident()
        return True

    def _take_lease(self, deadline: float | None) -> bool:
        # A call that failed may still have taken the lease (the server ran it after we gave
        # up): asking with the same token takes it back at once instead of after its expiry.
        token = self._unsure or f"{uuid.uuid4().hex} {socket.gethostname()} {os.getpid()}"
        delay = _WAIT_FIRST
        while True:
            self._unsure = token
            taken, *record = self._call(
                "take a refresh lease of",
                self._take,
                keys=[self._lease, self._record_key],
                args=[token, max(1, int(self.expiry * 1000))],
            )
            if taken:
                self._token, self._unsure = token, None
                self._record = record[0] if record else None
                _LOG.debug("took %s", self._shown)
                return True
            self._unsure = None  # it answered: another holder has it, not us
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            _LOG.debug("waiting for %s", self._shown)
            pause = delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not a secret
            if remaining is not None:
                pause = min(pause, remaining)
            with interruptible():
                # Woken at once by the holder's release, or after the pause (a lease that
                # expired pushes nothing), whichever comes first.
                self._call("wait for a refresh lease of", self._blpop, max(pause, 0.001))
            delay = min(delay * 2, _WAIT_MAX)

    def _blpop(self, seconds: float) -> object:
        return self._client.blpop([self._handoff], seconds)

    def _give_back_all(self) -> None:
        """Give back whatever this thread holds of the lease: the server's key, the lock."""
        held, unsure = self._token, self._unsure
        self._token, self._record = None, None
        try:
            if held is not None:
                self._give_back_token(held, held=True)
            elif unsure is not None:  # an acquire that failed may have set it: undo that
                self._give_back_token(unsure, held=False)
        finally:
            self._owner = None
            self._thread_lock.release()

    def _give_back_token(self, token: str, *, held: bool) -> None:
        try:
            released = self._call(
                "give back a refresh lease of",
                self._give_back,
                keys=[self._lease, self._handoff],
                args=[token],
            )
        except StoreUnavailableError as error:
            # Its expiry frees the lease for the others, and our next acquire, with the same
            # token, takes it back at once.
            self._unsure = token
            _LOG.warning("could not give back %s (%s)", self._shown, error.reason)
            return
        self._unsure = None
        if released:
            _LOG.debug("gave back %s", self._shown)
        elif held:
            _LOG.warning(
                "%s expired after %g s, before it was given back: another process may have "
                "refreshed the same token",
                self._shown,
                self.expiry,
            )

    def _forget_after_fork(self) -> None:
        # The child holds nothing: the token on the server, if any, is its parent's.
        self._thread_lock = threading.Lock()
        self._owner = self._token = self._unsure = self._record = None


def _after_fork_in_child() -> None:
    for lease in list(_LIVE):
        lease._forget_after_fork()  # noqa: SLF001 - module-private protocol


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
