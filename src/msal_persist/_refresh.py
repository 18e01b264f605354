"""Coordinated refresh: one token request when many processes need the same refresh.

Where msal lets us see a refresh coming. ``acquire_token_silent`` (public and confidential
clients) and ``acquire_token_for_client`` both look the access token up with one
``token_cache.search(AccessToken, target=scopes, query=...)`` generator: on a hit msal
returns from inside the loop (the generator is closed), on a miss it asks past the last
entry and then, and only then, goes to the authority (with a refresh token, or with the
client's credentials). So the cache knows "a refresh is coming" at the moment msal asks
past the last access token, before any request, and can still hand msal one more entry.

What happens there (:meth:`RefreshCoordinator.take_turn`): the caller tries the store's
:class:`~msal_persist._store.RefreshLease` for this token (a hash of client id, account,
environment, realm and scopes). If it is free, the caller holds it and msal refreshes. If
another process (or thread) holds it, that one is refreshing: the caller waits for the lease
(bounded by ``refresh_timeout``), reloads the cache and searches again; msal takes the fresh
access token from that second search and returns it with ``token_source`` ``"cache"``. The
holder of a lease taken at once searches again too (after a reload only if the cache
changed): a refresher may have stored its token and let go between msal's search and the
lease, and that window is otherwise a second request.

Why an explicit call is needed. msal tells the cache when a refresh succeeded (it stores the
answer) but never when one failed or raised: after an error it touches the cache no more
(``acquire_token_for_client``) or only by accident of its alias loop. A lease taken inside
``search`` alone could not be given back on failure until the waiters' timeout, and a
waiter could not return the refresher's error instead of asking again. So the lease is held
for the length of one msal call made through :func:`coordinate_refreshes`, which wraps
``acquire_token_silent``, ``acquire_token_silent_with_error`` and
``acquire_token_for_client`` of one application object; other calls are not coordinated.

Failure policy. A refresher whose call returns an error from the authority leaves it as the
lease's failure record before giving the lease back; those who were waiting for it return
that error (``acquire_token_silent`` returns ``None``, as msal does for any error) without a
request of their own, and so does every call that misses within ``FAILURE_BACKOFF`` seconds
of the failure (processes that arrive a moment late would otherwise ask one after another).
The first call after that asks the authority again. A refresher that
raises (a network error, Ctrl-C) or is killed leaves no record: the next waiter refreshes
itself. A refresher that hangs past ``refresh_timeout`` is left alone: its waiters move to a
second lease for the same token, and the first of them refreshes for the others; past a
second ``refresh_timeout`` (a hang again) each waiter refreshes on its own.

Lock order: the lease first, then msal's ``_lock``, then the store's write section. A lease
is never requested inside a transaction (the store's write section): coordination is then
skipped, never risking a wait for a lease whose holder waits for our write section.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from ._signals import deferred_interrupts
from ._store import RefreshLease, RefreshLeases

__all__ = [
    "DEFAULT_REFRESH_TIMEOUT",
    "FAILURE_BACKOFF",
    "RefreshCoordinator",
    "SharedRefreshFailure",
    "Turn",
    "coordinate_refreshes",
    "refresh_key",
]

_LOG: Final = logging.getLogger("msal_persist")

DEFAULT_REFRESH_TIMEOUT: Final = 10.0
"""Seconds a waiter waits for another process's refresh before refreshing itself."""
GENERATIONS: Final = 2
"""Leases per token, taken in turn when a holder hangs: a waiter waits at most this many
``refresh_timeout`` before refreshing on its own."""
FAILURE_BACKOFF: Final = 2.0
"""Seconds after a failed refresh during which a miss returns its error without a request."""

_KEY_LENGTH: Final = 24
_WRAPPERS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
"""The functions coordinate_refreshes() put on applications, so it never wraps twice."""
_COORDINATED: Final = (
    "acquire_token_silent_with_error",
    "acquire_token_for_client",
)


def refresh_key(query: Mapping[str, Any] | None, target: Any) -> str:
    """Name the token msal is about to refresh: a hash of its access-token search.

    The query holds client id, environment, realm, home account id (and key id or extended
    cache key when msal uses them); the target holds the scopes. Only a hash reaches a file
    name or a log line, never the home account id.
    """
    scopes = sorted(target) if isinstance(target, (list, tuple, set, frozenset)) else target
    what = json.dumps([sorted((query or {}).items()), scopes], default=str)
    return hashlib.sha256(what.encode()).hexdigest()[:_KEY_LENGTH]


class SharedRefreshFailure(Exception):  # noqa: N818 - a signal through msal, never seen outside
    """Raised through msal by a waiter whose refresher failed: carries that error."""

    def __init__(self, result: dict[str, Any]) -> None:
        """Carry the refresher's error response."""
        super().__init__(result.get("error"))
        self.result = result


class Turn(enum.Enum):
    """What a call that missed does after :meth:`RefreshCoordinator.take_turn`."""

    HOLDING = enum.auto()
    """It took the lease at once. Another refresher may have stored the token and let go
    between msal's search and now: look once more, then refresh if nothing came."""
    WAITED = enum.auto()
    """It waited for another refresher, and holds the lease now: look for that one's token,
    then :meth:`RefreshCoordinator.raise_if_failed`, then refresh if nothing came."""
    ON_OWN = enum.auto()
    """Other refreshers hung past both timeouts: refresh without a lease."""


_IDLE: Final = 0
_ACTIVE: Final = 1  # inside a coordinated call, before its miss
_TURN_TAKEN: Final = 2  # one turn per call: msal's alias retries do not wait again


class _CallState(threading.local):
    """What one thread's coordinated msal call holds."""

    phase = _IDLE
    lease: RefreshLease | None = None
    refreshing = False  # the lease's holder is asking the authority itself
    seen: bytes | None = None  # the failure record before the wait


class RefreshCoordinator:
    """The per-cache state of coordinated refreshes (see the module docstring).

    Args:
        leases: The store's leases, or ``None`` when the store offers none (or coordination
            is off): then nothing is coordinated.
        timeout: Seconds a waiter waits for another refresher; ``None`` waits forever.
        shown: How log lines name the cache.

    Attributes:
        failure_backoff: Seconds after a failed refresh during which a miss returns its
            error at once (:data:`FAILURE_BACKOFF`).
    """

    def __init__(self, leases: RefreshLeases | None, timeout: float | None, shown: str) -> None:
        """Describe the coordination; nothing is touched until a call misses."""
        if timeout is not None and timeout < 0:
            raise ValueError(f"refresh_timeout must be >= 0 or None, not {timeout!r}")
        self.leases = leases
        self.timeout = timeout
        self._shown = shown
        self._state = _CallState()
        self.failure_backoff = FAILURE_BACKOFF

    @property
    def enabled(self) -> bool:
        """Whether refreshes through this cache are coordinated at all."""
        return self.leases is not None

    def expecting(self) -> bool:
        """Whether a miss now is the start of a refresh this thread should coordinate."""
        return self._state.phase == _ACTIVE

    def run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Make one msal call coordinated: give back its lease, leave its failure record."""
        if self.leases is None:
            return call(*args, **kwargs)
        state = self._state
        if state.lease is not None:
            # A Ctrl-C landed as a previous call entered its clean-up, before Ctrl-C was held
            # back (no Python code can cover that instant): give back what it left first.
            self._finish(None)
        result: Any = None
        try:
            state.phase = _ACTIVE
            result = call(*args, **kwargs)
        except SharedRefreshFailure as failure:
            result = dict(failure.result)
        finally:
            if state.lease is None:
                state.phase = _IDLE  # a cache hit: no signal handler swapped for nothing
            else:
                self._finish(result)
        return result

    def _finish(self, result: Any) -> None:
        state = self._state
        with deferred_interrupts():
            lease, refreshing = state.lease, state.refreshing
            state.phase, state.lease, state.refreshing, state.seen = _IDLE, None, False, None
            if lease is None:
                return
            try:
                if refreshing and isinstance(result, dict):
                    lease.record_failure(_failure_record(result) if "error" in result else None)
            except Exception as error:  # noqa: BLE001 - a lost hint must not lose the token
                _LOG.warning("could not note a refresh outcome beside %s: %s", self._shown, error)
            finally:
                lease.release()

    def take_turn(self, key: str) -> Turn:
        """On a miss: hold the lease and refresh, or wait for the one refreshing.

        A holder that keeps the lease past ``timeout`` (a hung request) is left alone: the
        waiters move on to a second lease for the same token, so that one of them refreshes
        for the others. Past a second ``timeout`` each refreshes on its own.

        Returns:
            What the caller should do next (see :class:`Turn`).

        Raises:
            SharedRefreshFailure: A refresh of this token failed less than
                ``failure_backoff`` seconds ago; carries its error.
        """
        assert self.leases is not None  # expecting() said so
        self._state.phase = _TURN_TAKEN
        for generation in range(GENERATIONS):
            lease = self.leases.refresh_lease(key if generation == 0 else f"{key}g{generation}")
            turn = self._wait_turn(lease, key)
            if turn is not None:
                return turn
        _LOG.warning(
            "other processes have been refreshing a token of %s for more than %s s; "
            "refreshing it here too",
            self._shown,
            GENERATIONS * (self.timeout or 0.0),
        )
        return Turn.ON_OWN

    def _wait_turn(self, lease: RefreshLease, key: str) -> Turn | None:
        """:meth:`take_turn` on one lease; ``None``: its holder kept it past the timeout."""
        state = self._state
        seen = lease.failure()
        recent = _parse_failure(seen, self.failure_backoff) if seen is not None else None
        if recent is not None:
            _LOG.debug("a refresh of token %s of %s just failed: backing off", key, self._shown)
            raise SharedRefreshFailure(recent)
        with deferred_interrupts():
            taken = lease.acquire(0)
            if taken:
                state.lease = lease
        if taken:
            # A refresher may have failed and let go since we read its record: back off too.
            record = lease.failure()
            if record is not None and record != seen:
                recent = _parse_failure(record, self.failure_backoff)
                if recent is not None:
                    raise SharedRefreshFailure(recent)
            state.refreshing = True
            _LOG.debug("refreshing token %s of %s", key, self._shown)
            return Turn.HOLDING
        _LOG.debug("waiting for another refresh of token %s of %s", key, self._shown)
        with deferred_interrupts():
            if lease.acquire(self.timeout):
                state.lease, state.seen = lease, seen
                return Turn.WAITED
        return None

    def raise_if_failed(self) -> None:
        """After waiting, no fresh token: return the refresher's error, or refresh ourselves.

        Raises:
            SharedRefreshFailure: The refresher we waited for failed; carries its error.
        """
        state = self._state
        lease = state.lease
        assert lease is not None  # take_turn() returned WAITED
        record = lease.failure()
        if record is not None and record != state.seen:
            result = _parse_failure(record, None)
            if result is not None:
                _LOG.debug("the refresh this process waited for failed: %s", result.get("error"))
                raise SharedRefreshFailure(result)
        # The refresher was killed or raised: our turn, holding its lease.
        state.refreshing = True


def _failure_record(result: Mapping[str, Any]) -> bytes:
    # An error response holds no token; a fresh id makes each failure a new record.
    error = {k: v for k, v in result.items() if not k.startswith("_")}
    record = {"id": uuid.uuid4().hex, "at": time.time(), "error": error}
    return json.dumps(record, default=str).encode()


def _parse_failure(record: bytes, within: float | None) -> dict[str, Any] | None:
    """The error in ``record``; with ``within``, only if it is younger than that."""
    try:
        parsed = json.loads(record)
        error, at = parsed["error"], float(parsed["at"])
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(error, dict) or "error" not in error:
        return None
    # Wall-clock times of one host (or of hosts kept in step, for a shared store): a clock
    # that jumps only makes the back-off shorter or the record ignored.
    if within is not None and not 0 <= time.time() - at < within:
        return None
    return error


def coordinate_refreshes(app: Any) -> Any:
    """Make ``app``'s silent token calls ask the authority once for many processes.

    Wraps, on this application object, ``acquire_token_silent``,
    ``acquire_token_silent_with_error`` and (on a confidential client)
    ``acquire_token_for_client``, and returns the same object. When several processes (or
    threads) sharing the cache need the same refresh at once, one asks the authority; the
    others wait for it (up to ``refresh_timeout``) and return its token from the cache,
    with ``token_source`` ``"cache"``. Cache hits are not affected. See
    :mod:`~msal_persist._refresh` (and the README) for what waiters see when the refresher
    fails, is killed or hangs.

    Args:
        app: An ``msal.PublicClientApplication`` or ``msal.ConfidentialClientApplication``
            whose ``token_cache`` is a :class:`~msal_persist.PersistedTokenCache`.

    Returns:
        ``app`` itself.

    Raises:
        TypeError: ``app``'s token cache is not a ``PersistedTokenCache``.
    """
    coordinator = getattr(app.token_cache, "refresh_coordinator", None)
    if not isinstance(coordinator, RefreshCoordinator):
        raise TypeError("coordinate_refreshes() needs an app whose cache is a PersistedTokenCache")
    if app.acquire_token_silent in _WRAPPERS:
        return app  # wrapped already
    run = coordinator.run
    silent_with_error = app.acquire_token_silent_with_error

    def acquire_token_silent(*args: Any, **kwargs: Any) -> Any:
        # msal's own rule: any error, like an empty cache, is None here. One wrapper level
        # (not through the wrapped method): a cache hit pays as little as it can.
        result = run(silent_with_error, *args, **kwargs)
        return result if result and "error" not in result else None

    acquire_token_silent.__doc__ = app.acquire_token_silent.__doc__
    _WRAPPERS.add(acquire_token_silent)
    app.acquire_token_silent = acquire_token_silent
    for name in _COORDINATED:
        call = getattr(app, name, None)
        if call is not None:  # acquire_token_for_client: confidential clients only
            setattr(app, name, _coordinated(coordinator, call))
    return app


def _coordinated(coordinator: RefreshCoordinator, call: Callable[..., Any]) -> Callable[..., Any]:
    def coordinated(*args: Any, **kwargs: Any) -> Any:
        return coordinator.run(call, *args, **kwargs)

    coordinated.__doc__ = call.__doc__
    _WRAPPERS.add(coordinated)
    return coordinated
