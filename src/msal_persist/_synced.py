"""The store-synced core of the msal glue: transactions and fresh lock-free reads.

:class:`SyncedCache` keeps an msal ``SerializableTokenCache`` in step with a *store* (where
the bytes live and who may write: :mod:`~msal_persist._store`) through a *codec* (bytes to
document and back: :mod:`~msal_persist._codec`):

- a transaction holds msal's in-memory ``_lock`` first, then the store's exclusive section
  (never the reverse), reloads if the store changed (proven by the bytes, not the version),
  and writes once at the end, only if the state changed;
- a read outside a transaction costs the store's cheapest "unchanged?" check and no lock,
  and reloads only when the store changed;
- content that is no cache document is set aside only by a holder of the store's lock,
  after it had time to settle (:mod:`~msal_persist._settle`); entries msal cannot use are
  left out, and the original is kept beside the cache.

Ctrl-C is held back while a transaction begins or ends (:mod:`~msal_persist._signals`), so
an interrupt at any instant leaves nothing held. The msal-specific overrides live in
:class:`~msal_persist.PersistedTokenCache`.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Final

import msal

from ._codec import Codec, JsonCodec, NotACacheError
from ._errors import CacheFileError, DecryptionError, MsalPersistError
from ._schema import ACCESS_TOKEN
from ._settle import settle
from ._signals import checkpoint, deferred_interrupts
from ._store import ABSENT, Snapshot, Store
from ._text import printable

__all__ = ["SyncedCache", "Transaction", "expired"]

_LOG: Final = logging.getLogger("msal_persist")

_MEMORY_WAIT: Final = 0.05
"""How long one wait for another thread's transaction lasts before a Ctrl-C is let in."""

_LIVE_CACHES: weakref.WeakSet[SyncedCache] = weakref.WeakSet()


class SyncedCache(msal.SerializableTokenCache):  # type: ignore[misc]  # msal is untyped
    """An msal cache whose state follows a store; see the module docstring."""

    has_state_changed: bool  # declared by msal, which is untyped

    def __init__(self, store: Store, codec: Codec | None = None) -> None:
        """Follow ``store``; nothing is read or written until msal asks."""
        super().__init__()
        self.store: Store = store
        self.codec: Codec = JsonCodec() if codec is None else codec
        self._shown = store.display_name
        self._depth = 0
        self._synced = False
        self._known: Snapshot = ABSENT
        self._pending_adds: list[tuple[dict[str, Any], int]] = []
        self._lazy_removals: list[dict[str, Any]] = []
        self._unclean = False  # the store holds entries msal cannot use, not yet set aside
        self._prepared = False
        _LIVE_CACHES.add(self)

    # -- transactions -------------------------------------------------------------------

    def transaction(self) -> Transaction:
        """Hold the store's lock around several msal calls and write once at the end.

        On entry the cache is reloaded if the store changed; on normal exit it is written if
        (and only if) the state changed. If the body raises, nothing is written and the next
        access reloads from the store. Nested transactions join the outermost one.

        Example::

            with cache.transaction():
                for account in app.get_accounts():
                    app.remove_account(account)   # one lock, one write

        Raises:
            LockTimeoutError: Another process held the lock past ``lock_timeout``.
            CacheFileError: The file cannot be read or written.
        """
        return Transaction(self)

    def _begin(self, *, sync: bool = True) -> None:
        """Enter a transaction (with interrupts held back): memory lock, store lock, sync."""
        while not self._lock.acquire(timeout=_MEMORY_WAIT):
            checkpoint()  # another thread's transaction: let a held-back Ctrl-C in meanwhile
        try:
            if self._depth:
                self._depth += 1
                return
            self.store.acquire()
            try:
                self._depth = 1
                if sync:
                    self._sync_locked()
            except BaseException:
                self._depth, self._synced = 0, False
                self.store.release()
                raise
        except BaseException:
            self._lock.release()
            raise

    def _end(self, *, commit: bool) -> None:
        """Leave a transaction (with interrupts held back): write if asked, release."""
        wrote = False
        try:
            if self._depth > 1:
                self._depth -= 1
                return
            committed = False
            try:
                if commit:
                    wrote = self._commit_locked()
                    committed = True
            finally:
                if not committed:
                    self._synced = False  # memory may hold half a change; trust the file
                self._depth = 0
                self.store.release()
        finally:
            self._lock.release()
        if wrote:
            # The rename is already visible to everyone; making it durable needs no lock,
            # and holding the lock for it would make every waiter wait longer.
            self.store.make_durable()

    def _sync_locked(self) -> None:
        """Under the lock: make memory match the newest stored bytes, proven by the bytes."""
        if not self._prepared:
            self._prepared = True
            self.store.prepare()
        snapshot = self.store.load()
        if self._synced and snapshot.data == self._known.data and not self._unclean:
            # Same bytes as memory reflects: a stat fingerprint alone could repeat after
            # inode reuse within one timestamp tick, the bytes cannot lie.
            self._known = snapshot
        else:
            self._adopt(snapshot, may_quarantine=True)
        for event, now in self._pending_adds:
            msal.SerializableTokenCache.add(self, event, now=now)
        self._pending_adds.clear()
        if self._lazy_removals:
            now = int(time.time())
            for entry in self._lazy_removals:
                key = self.key_makers[ACCESS_TOKEN](**entry)
                current = self._cache.get(ACCESS_TOKEN, {}).get(key)
                # Another process may have stored a fresh token under the same key since.
                if current is not None and expired(current, now):
                    msal.SerializableTokenCache.modify(self, ACCESS_TOKEN, entry)
            self._lazy_removals.clear()

    def _commit_locked(self) -> bool:
        """Write memory to the file if it changed; return whether a file was written."""
        if not self.has_state_changed:
            return False
        self.has_state_changed = False
        if not self._known.exists and not any(self._cache.values()):
            # Nothing to keep and no file: do not create one (a deleted cache means empty).
            return False
        try:
            data = self.codec.encode(self._cache)
        except ValueError as error:  # msal stored a NaN or an infinity from a response
            self.has_state_changed = True
            reason = f"the cache holds a value strict JSON cannot carry ({error})"
            raise CacheFileError(self._shown, "write", reason) from None
        if data == self._known.data:
            return False
        try:
            version = self.store.save(data)
        except BaseException:
            self.has_state_changed = True
            raise
        self._known = Snapshot(data, version)
        return True

    # -- reads ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Before a read: reload if the store changed since memory last matched it."""
        # The common case, a store nobody changed, costs the store's cheapest check (one
        # lstat for a file) and no lock: msal reads the cache several times per
        # acquire_token_silent, and a cache hit must stay as cheap as in memory. A writer
        # in another thread holds _lock, which msal's own read then waits for.
        known = self._known.version
        if (
            known is not None
            and self._synced
            and not self._depth
            and not self._pending_adds
            and self.store.unchanged(known)
        ):
            return
        with self._lock:
            if self._depth:
                return  # the transaction synced under the lock; memory is the truth
            if self._pending_adds:
                with self.transaction():
                    return
            # Another thread may have reloaded while we waited for _lock: compare again.
            known = self._known.version
            if self._synced and known is not None and self.store.unchanged(known):
                return
            snapshot = self.store.load()
            try:
                self._adopt(snapshot, may_quarantine=False)
            except NotACacheError:
                # Outside the lock, bad bytes may be a peer's in-place write in progress
                # (msal-extensions truncates, then writes). Look again holding the lock,
                # where only a finished document or real corruption can be seen.
                with self.transaction():
                    pass

    def _adopt(self, snapshot: Snapshot, *, may_quarantine: bool) -> None:
        if snapshot.data is None:
            if self._known.exists or not self._synced or any(self._cache.values()):
                # Deleted by someone else means empty: never resurrect it from memory.
                self._replace_state({})
                _LOG.debug("%s is absent: cache is empty", self._shown)
            self._known, self._synced = snapshot, True
            return
        try:
            decoded = self.codec.decode(snapshot.data)
        except DecryptionError as error:
            # Not corruption: another key, or tampering. Nothing is set aside or written, so
            # one misconfigured process cannot sign every other one out.
            raise error.at(self._shown) from None
        except NotACacheError as error:
            if not may_quarantine:
                raise
            settled = settle(self.store, self.codec, snapshot)
            if settled is not None:
                self._adopt(settled, may_quarantine=False)
                return
            moved = self.store.set_aside()
            _LOG.warning(
                "token cache %s is not an msal cache document (%s); moved it to %s and "
                "continued with an empty cache",
                self._shown,
                error,
                moved,
            )
            self._replace_state({})
            self._known, self._synced = ABSENT, True
            return
        self._replace_state(decoded.state)
        self._known, self._synced = snapshot, True
        self._unclean = bool(decoded.rejected)
        if decoded.rejected and may_quarantine:
            # Only what is broken goes: the copy keeps every byte of the original, the cache
            # keeps every usable entry and is written back without the rest.
            copy = self.store.set_aside(snapshot.data)
            _LOG.warning(
                "token cache %s held %d entries msal cannot use (%s); kept the original as "
                "%s and continued with the usable entries",
                self._shown,
                decoded.rejected,
                "; ".join(decoded.problems[:3]),
                copy,
            )
            self.has_state_changed, self._unclean = True, False
        _LOG.debug("reloaded %s (%d bytes)", self._shown, len(snapshot.data))

    def _replace_state(self, state: dict[str, Any]) -> None:
        self._cache = state
        self.has_state_changed = False

    def flush(self) -> None:
        """Write what is queued now (done automatically at the next access and at exit)."""
        with self._lock:
            if self._pending_adds:
                with self.transaction():
                    pass

    def _forget_after_fork(self) -> None:
        # A thread of the parent may have held _lock or been mid-transaction at fork time;
        # the child starts clean and trusts only the file.
        self._lock = threading.RLock()
        self._depth = 0
        self._synced = False
        self._pending_adds = []
        self._lazy_removals = []


class Transaction:
    """What ``with cache.transaction():`` enters and leaves.

    A class, not a generator: ``__enter__`` either returns with the transaction open or
    raises with nothing held, whatever instant a Ctrl-C lands at (see ``_signals``). The one
    instant no Python code can cover, a Ctrl-C landing as Python enters ``__exit__``, leaves
    the transaction open with nobody to close it; then this object is dropped unclosed, and
    its finalizer ends the transaction (without writing), so the instance is never stuck.
    """

    __slots__ = ("_cache", "_opened_by", "_sync")

    def __init__(self, cache: SyncedCache, *, sync: bool = True) -> None:
        self._cache = cache
        self._sync = sync
        self._opened_by: int | None = None

    def __enter__(self) -> None:
        try:
            with deferred_interrupts():
                self._cache._begin(sync=self._sync)  # noqa: SLF001
                self._opened_by = threading.get_ident()
            return  # noqa: TRY300 - the return must sit inside the try
        except BaseException:
            self._close(commit=False)  # a Ctrl-C held back while beginning: undo it all
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(commit=exc_type is None)

    def __del__(self) -> None:
        # getattr: an interrupt inside __init__ leaves the attribute unset.
        opened_by = getattr(self, "_opened_by", None)
        if opened_by is None or opened_by != threading.get_ident():
            return
        try:
            _LOG.warning(
                "a transaction on %s was interrupted before it ended; nothing was written",
                self._cache._shown,  # noqa: SLF001
            )
        finally:
            try:
                self._close(commit=False)
            except KeyboardInterrupt:
                # Python drops any exception a finalizer raises; make sure the close ran.
                self._close(commit=False)

    def _close(self, *, commit: bool) -> None:
        with deferred_interrupts():
            if self._opened_by is not None:
                self._opened_by = None
                self._cache._end(commit=commit)  # noqa: SLF001


def expired(entry: dict[str, Any], now: int) -> bool:
    try:
        return int(entry["expires_on"]) < now
    except (KeyError, TypeError, ValueError):
        return False


def _flush_at_exit() -> None:
    for cache in list(_LIVE_CACHES):
        try:
            cache.flush()
        except (MsalPersistError, OSError) as error:
            _LOG.warning("could not write pending tokens at exit: %s", printable(str(error)))


def _after_fork_in_child() -> None:
    for cache in list(_LIVE_CACHES):
        cache._forget_after_fork()  # noqa: SLF001 - module-private protocol


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
