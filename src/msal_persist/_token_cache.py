"""The msal glue: a ``SerializableTokenCache`` kept in step with one shared file.

Composes :class:`~msal_persist.FilePersistence` (bytes on disk) and
:class:`~msal_persist.CrossProcessLock` (who may write). How msal drives a token cache, and so
what is overridden here:

- ``add(event)`` runs once per token acquisition and calls ``modify()`` up to five times while
  holding ``_lock``. It becomes one transaction: one lock, one reload if the file changed, one
  write.
- A refresh-token grant is followed at once by ``update_rt()`` (msal strips the new refresh
  token from the event it passes to ``add``). That ``add`` is queued and applied in the
  ``update_rt`` transaction, so a forced refresh also costs one lock and one write.
- ``search()`` (and ``_get``, which ``_get_access_token`` and ``_get_app_metadata`` use) read
  without the lock, after reloading if the file's fingerprint changed. ``search()`` removes
  expired access tokens through ``remove_at``; those removals are housekeeping and are written
  with the next transaction instead of costing a write of their own.
- Lock order is always msal's ``_lock`` first, then the file lock: ``search()`` holds
  ``_lock`` when it calls ``modify()``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import stat
import threading
import time
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Final

import msal

from ._document import NotACacheError, decode_document, encode_document, parse_document
from ._errors import CacheFileError, MsalPersistError
from ._locations import DEFAULT_APP_NAME, CacheLocation, default_cache_path
from ._lock import DEFAULT_LOCK_TIMEOUT, CrossProcessLock
from ._persistence import FilePersistence, Fingerprint, Snapshot
from ._signals import checkpoint, deferred_interrupts
from ._text import printable

__all__ = ["LOCK_FILE_SUFFIX", "PersistedTokenCache"]

_LOG: Final = logging.getLogger("msal_persist")

SETTLE_SECONDS: Final = 0.5
"""How long unparsable bytes must stay unchanged, under the lock, before they are set aside."""

LOCK_FILE_SUFFIX: Final = ".lockfile"
"""Appended to the cache path to name the lock file, as every MSAL peer does."""

_ACCESS_TOKEN: Final = "AccessToken"  # noqa: S105 - a section name
_MEMORY_WAIT: Final = 0.05
"""How long one wait for another thread's transaction lasts before a Ctrl-C is let in."""

_LIVE_CACHES: weakref.WeakSet[PersistedTokenCache] = weakref.WeakSet()


class PersistedTokenCache(msal.SerializableTokenCache):  # type: ignore[misc]  # msal is untyped
    """An msal token cache that many processes share safely through one file.

    Pass it as ``token_cache=`` to ``msal.PublicClientApplication`` or
    ``msal.ConfidentialClientApplication``. Every process (or instance) on the same path sees
    the others' sign-ins; none ever erases what another wrote; the file is always whole.

    Args:
        path: The cache file (``str`` or path-like, ``~`` expanded). ``None`` chooses the
            default location (see :func:`~msal_persist.default_cache_path`).
        app_name: Names the directory of the default location; ignored when ``path`` (or
            ``MSAL_PERSIST_CACHE``) is given.
        lock_timeout: Seconds to wait for another process's lock before raising
            :class:`~msal_persist.LockTimeoutError`; ``None`` waits forever.
        fsync: Flush each write to stable storage before it becomes visible. ``False`` is
            faster and still atomic towards other processes and crashes of this one, but a
            power loss may lose the last write.

    Attributes:
        location: The chosen :class:`~msal_persist.CacheLocation` (path and rule).
        persistence: The :class:`~msal_persist.FilePersistence` holding the bytes; its
            ``saves`` counter counts files written.
        lock: The :class:`~msal_persist.CrossProcessLock` on ``<path>.lockfile``.
    """

    has_state_changed: bool  # declared by msal, which is untyped

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        app_name: str = DEFAULT_APP_NAME,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        fsync: bool = True,
    ) -> None:
        """Resolve the location; nothing is read or written until msal asks."""
        super().__init__()
        self.location: CacheLocation = default_cache_path(app_name, explicit=path)
        self.persistence = FilePersistence(self.location.path, fsync=fsync)
        self._path_text = str(self.location.path)
        self.lock = CrossProcessLock(
            f"{self.location.path}{LOCK_FILE_SUFFIX}",
            timeout=lock_timeout,
        )
        self._shown = printable(self.location.path)
        self._depth = 0
        self._synced = False
        self._known: Snapshot = Snapshot(None, None)
        self._pending_adds: list[tuple[dict[str, Any], int]] = []
        self._lazy_removals: list[dict[str, Any]] = []
        self._in_search = threading.local()
        self._warned_mode = False
        self._unclean = False  # the file holds entries msal cannot use, not yet set aside
        self._swept_temp_files = False
        _LIVE_CACHES.add(self)

    def __repr__(self) -> str:
        """Show the file, which is what identifies the cache."""
        return f"{type(self).__name__}({str(self.location.path)!r})"

    @property
    def path(self) -> os.PathLike[str]:
        """The cache file."""
        return self.location.path

    # -- transactions -------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        """Hold the file lock around several msal calls and write once at the end.

        On entry the cache is reloaded if the file changed; on normal exit it is written if
        (and only if) the state changed. If the body raises, nothing is written and the next
        access reloads from the file. Nested transactions join the outermost one.

        Example::

            with cache.transaction():
                for account in app.get_accounts():
                    app.remove_account(account)   # one lock, one write

        Raises:
            LockTimeoutError: Another process held the lock past ``lock_timeout``.
            CacheFileError: The file cannot be read or written.
        """
        return _Transaction(self)

    def _begin(self, *, sync: bool = True) -> None:
        """Enter a transaction (with interrupts held back): memory lock, file lock, sync."""
        while not self._lock.acquire(timeout=_MEMORY_WAIT):
            checkpoint()  # another thread's transaction: let a held-back Ctrl-C in meanwhile
        try:
            if self._depth:
                self._depth += 1
                return
            self.lock.acquire()
            try:
                self._depth = 1
                if sync:
                    self._sync_locked()
            except BaseException:
                self._depth, self._synced = 0, False
                self.lock.release()
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
                self.lock.release()
        finally:
            self._lock.release()
        if wrote:
            # The rename is already visible to everyone; making it durable needs no lock,
            # and holding the lock for it would make every waiter wait longer.
            self.persistence.sync_directory()

    def _sync_locked(self) -> None:
        """Under the lock: make memory match the newest file content, proven by its bytes."""
        if not self._swept_temp_files:
            self._swept_temp_files = True
            self.persistence.remove_stale_temp_files()
            self.persistence.warn_if_exposed_directory()
        snapshot = self.persistence.load()
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
                key = self.key_makers[_ACCESS_TOKEN](**entry)
                current = self._cache.get(_ACCESS_TOKEN, {}).get(key)
                # Another process may have stored a fresh token under the same key since.
                if current is not None and _expired(current, now):
                    msal.SerializableTokenCache.modify(self, _ACCESS_TOKEN, entry)
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
            data = encode_document(self._cache)
        except ValueError as error:  # msal stored a NaN or an infinity from a response
            self.has_state_changed = True
            reason = f"the cache holds a value strict JSON cannot carry ({error})"
            raise CacheFileError(str(self.location.path), "write", reason) from None
        if data == self._known.data:
            return False
        try:
            fingerprint = self.persistence.save(data, sync_directory=False)
        except BaseException:
            self.has_state_changed = True
            raise
        self._known = Snapshot(data, fingerprint, 0o600)
        return True

    # -- reads ----------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Before a read: reload if the file changed since memory last matched it."""
        # The common case, a file nobody changed, costs one stat and no lock: msal reads the
        # cache several times per acquire_token_silent, and a cache hit must stay as cheap
        # as in memory. A writer in another thread holds _lock, which msal's own read then
        # waits for.
        seen: Fingerprint | None = None
        known = self._known.fingerprint
        if known is not None and self._synced and not self._depth and not self._pending_adds:
            try:
                st = os.stat(self._path_text)
            except OSError:
                pass  # gone or unreadable: the locked path below says which
            else:
                # Field by field: building a Fingerprint here would double this path's cost.
                if (
                    st.st_mtime_ns == known.mtime_ns
                    and st.st_ino == known.inode
                    and st.st_size == known.size
                    and st.st_dev == known.device
                ):
                    return
                seen = Fingerprint.from_stat(st)
        with self._lock:
            if self._depth:
                return  # the transaction synced under the lock; memory is the truth
            if self._pending_adds:
                with self.transaction():
                    return
            # Another thread may have reloaded while we waited for _lock: compare again,
            # with the stat already taken when there is one.
            fingerprint = seen or self.persistence.fingerprint()
            if self._synced and fingerprint == self._known.fingerprint:
                return
            snapshot = self.persistence.load()
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
                _LOG.debug("%s is absent: cache is empty", self.persistence.path)
            self._known, self._synced = snapshot, True
            return
        try:
            decoded = decode_document(snapshot.data)
        except NotACacheError as error:
            if not may_quarantine:
                raise
            settled = self._settle(snapshot)
            if settled is not None:
                self._adopt(settled, may_quarantine=False)
                return
            moved = self.persistence.quarantine()
            _LOG.warning(
                "token cache %s is not an msal cache document (%s); moved it to %s and "
                "continued with an empty cache",
                self.persistence.path,
                error,
                moved,
            )
            self._replace_state({})
            self._known, self._synced = Snapshot(None, None), True
            return
        self._warn_if_exposed(snapshot)
        self._replace_state(decoded.state)
        self._known, self._synced = snapshot, True
        self._unclean = bool(decoded.rejected)
        if decoded.rejected and may_quarantine:
            # Only what is broken goes: the copy keeps every byte of the original, the cache
            # keeps every usable entry and is written back without the rest.
            copy = self.persistence.keep_copy(snapshot.data)
            _LOG.warning(
                "token cache %s held %d entries msal cannot use (%s); kept the original as "
                "%s and continued with the usable entries",
                self._shown,
                decoded.rejected,
                "; ".join(decoded.problems[:3]),
                printable(copy),
            )
            self.has_state_changed, self._unclean = True, False
        _LOG.debug("reloaded %s (%d bytes)", self.persistence.path, len(snapshot.data))

    def _settle(self, snapshot: Snapshot) -> Snapshot | None:
        """Under the lock, give bad bytes time to become a document; ``None`` if they don't.

        Writers that ignore the lock (msal's own recipe rewrites the file in place) can
        still be mid-write. Bytes are judged corrupt only once they stayed the same and
        unparsable for SETTLE_SECONDS; a version that parses or a vanished file is returned.
        """
        started = stable_since = time.monotonic()
        while time.monotonic() - stable_since < SETTLE_SECONDS:
            if time.monotonic() - started > 10 * SETTLE_SECONDS:
                break  # bytes that never stop changing and never parse: judge them anyway
            time.sleep(SETTLE_SECONDS / 10)
            again = self.persistence.load()
            if again.data != snapshot.data:
                stable_since = time.monotonic()
            snapshot = again
            if snapshot.data is None:
                return snapshot
            try:
                parse_document(snapshot.data)
            except NotACacheError:
                continue
            return snapshot
        return None

    def _replace_state(self, state: dict[str, Any]) -> None:
        self._cache = state
        self.has_state_changed = False

    def _warn_if_exposed(self, snapshot: Snapshot) -> None:
        if snapshot.mode & (stat.S_IRWXG | stat.S_IRWXO) and not self._warned_mode:
            self._warned_mode = True
            _LOG.warning(
                "token cache %s is accessible by group or others (mode %04o); run: chmod 600 %s",
                self.persistence.path,
                snapshot.mode,
                self.persistence.path,
            )

    def search(self, credential_type: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Like msal's ``search``, on the newest content of the file."""
        self._refresh()
        entries = super().search(credential_type, *args, **kwargs)
        # msal's first step looks the access token up through _get(); the cache was just
        # refreshed, so that lookup need not stat the file a second time. Only msal's own
        # code runs during this step, and the flag is down before anything is yielded.
        self._in_search.active = True
        try:
            first = next(entries)
        except StopIteration:
            return
        finally:
            self._in_search.active = False
        yield first
        yield from entries

    def _get(self, credential_type: str, key: str, default: Any = None) -> Any:
        # msal's ClientApplication reaches this directly (through _get_app_metadata and
        # _get_access_token), bypassing search(): it must see fresh data too.
        if not getattr(self._in_search, "active", False):
            self._refresh()
        return super()._get(credential_type, key, default)

    def serialize(self) -> str:
        """Return the newest content in msal's own format (indent 4), as msal would.

        Unlike msal's, this does not reset ``has_state_changed``: what is on disk decides
        that here, and a pending write must not be forgotten because someone looked.
        """
        with self._lock:
            self._refresh()
            return json.dumps(self._cache, indent=4)

    # -- writes ---------------------------------------------------------------------------

    def add(self, event: dict[str, Any], now: int | None = None, **kwargs: Any) -> None:
        """Store what one token response brought, in one transaction (one lock, one write)."""
        now = int(time.time() if now is None else now)
        with self._lock:
            if self._depth == 0 and _refresh_token_update_follows(event):
                # msal calls update_rt() right after this add(); both land in its transaction.
                self._pending_adds.append((event, now))
                return
            with self.transaction():
                super().add(event, now=now, **kwargs)

    def modify(
        self,
        credential_type: str,
        old_entry: dict[str, Any],
        new_key_value_pairs: dict[str, Any] | None = None,
    ) -> None:
        """Change one entry; outside a transaction this is a transaction of its own."""
        with self._lock:
            if self._depth:
                super().modify(credential_type, old_entry, new_key_value_pairs)
                return
            if (
                credential_type == _ACCESS_TOKEN
                and new_key_value_pairs is None
                and _expired(old_entry, int(time.time()))
            ):
                # search() dropping an expired token: housekeeping, not worth a write now.
                super().modify(credential_type, old_entry, None)
                self.has_state_changed = False
                self._lazy_removals.append(old_entry)
                return
            with self.transaction():
                super().modify(credential_type, old_entry, new_key_value_pairs)

    def deserialize(self, state: str | bytes | None) -> None:
        """Replace the whole cache with ``state`` (msal's format) and write it to the file.

        Raises:
            ValueError: ``state`` is not an msal cache document; nothing was changed.
        """
        try:
            parsed = parse_document(state) if state else {}
        except NotACacheError as error:
            raise ValueError(f"not an msal token cache document: {error}") from None
        with self.transaction():
            self._cache = parsed
            self.has_state_changed = True

    def clear(self) -> bool:
        """Delete every token of every account: remove the file, under the lock.

        Every process sharing the file sees an empty cache from its next read on. The file
        is not read first, so even a corrupt one goes without leaving a set-aside copy.
        Returns whether there was a file.

        Raises:
            CacheFileError: The file is read-only or cannot be removed.
        """
        with _Transaction(self, sync=False):
            existed = self.persistence.remove()
            self._replace_state({})
            self._known, self._synced = Snapshot(None, None), True
            self._pending_adds.clear()
            self._lazy_removals.clear()
        return existed

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


class _Transaction:
    """What ``with cache.transaction():`` enters and leaves.

    A class, not a generator: ``__enter__`` either returns with the transaction open or
    raises with nothing held, whatever instant a Ctrl-C lands at (see ``_signals``). The one
    instant no Python code can cover, a Ctrl-C landing as Python enters ``__exit__``, leaves
    the transaction open with nobody to close it; then this object is dropped unclosed, and
    its finalizer ends the transaction (without writing), so the instance is never stuck.
    """

    __slots__ = ("_cache", "_opened_by", "_sync")

    def __init__(self, cache: PersistedTokenCache, *, sync: bool = True) -> None:
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


def _refresh_token_update_follows(event: dict[str, Any]) -> bool:
    # For a refresh-token grant msal removes the new refresh token from the response it
    # hands to add(), then passes it to update_rt(). With also_save_rt it leaves it in.
    response = event.get("response") or {}
    return (
        event.get("grant_type") == "refresh_token"
        and "refresh_token" not in response
        and "error" not in response
    )


def _expired(entry: dict[str, Any], now: int) -> bool:
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
