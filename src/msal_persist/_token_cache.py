"""The msal glue: a ``SerializableTokenCache`` kept in step with one shared store.

It talks to a *store* (where the bytes live, who may write: :mod:`~msal_persist._store`) and
a *codec* (bytes to document and back: :mod:`~msal_persist._codec`) and never to a path or
a socket. How msal drives a token cache, and so what is overridden here:

- ``add(event)`` runs once per token acquisition and calls ``modify()`` up to five times while
  holding ``_lock``. It becomes one transaction: one lock, one reload if the file changed, one
  write.
- A refresh-token grant is followed at once by ``update_rt()`` (msal strips the new refresh
  token from the event it passes to ``add``). That ``add`` is queued and applied in the
  ``update_rt`` transaction, so a forced refresh also costs one lock and one write.
- ``search()`` (and ``_get``, which ``_get_access_token`` and ``_get_app_metadata`` use) read
  without the lock, after reloading if the store's version changed. ``search()`` removes
  expired access tokens through ``remove_at``; those removals are housekeeping and are written
  with the next transaction instead of costing a write of their own.
- Lock order is always msal's ``_lock`` first, then the store's: ``search()`` holds
  ``_lock`` when it calls ``modify()``. A refresh lease (coordinated refreshes) comes before
  both and is never requested while this thread is in a transaction.
- When msal's access-token ``search()`` finds nothing msal can use, a refresh is coming:
  inside a call made through :func:`~msal_persist.coordinate_refreshes`, the search then
  waits for a concurrent refresher and hands msal its fresh token (:mod:`._refresh`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Final

from ._codec import Codec, NotACacheError, parse_document
from ._encryption import EncryptedCodec
from ._file_store import FileStore
from ._keys import KeySource
from ._locations import DEFAULT_APP_NAME, CacheLocation, default_cache_path
from ._lock import DEFAULT_LOCK_TIMEOUT
from ._refresh import DEFAULT_REFRESH_TIMEOUT, RefreshCoordinator, Turn, refresh_key
from ._schema import ACCESS_TOKEN, ACCOUNT_SECTIONS
from ._store import ABSENT, RefreshLeases, Store
from ._synced import SyncedCache, Transaction, expired

__all__ = ["PersistedTokenCache"]

_END: Final = object()


class PersistedTokenCache(SyncedCache):
    """An msal token cache that many processes share safely through one store.

    Pass it as ``token_cache=`` to ``msal.PublicClientApplication`` or
    ``msal.ConfidentialClientApplication``. Every process (or instance) on the same file sees
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
        store: Where the cache lives, instead of a file chosen by ``path``: any
            :class:`~msal_persist.Store` (a :class:`~msal_persist.FileStore` made with its
            own options, for example). Give either ``path`` or ``store``.
        codec: How the bytes are read and written; msal's own JSON format by default.
        encryption: Encrypt the cache at rest (AES-256-GCM; the ``encryption`` extra) with
            the key from this source: :class:`~msal_persist.KeyringKey` (the OS keyring),
            :class:`~msal_persist.EnvironmentKey`, :class:`~msal_persist.FileKey`,
            :class:`~msal_persist.RawKey`, 32 key bytes, or the text forms ``"keyring"``,
            ``"keyring:NAME"``, ``"env:VARIABLE"``, ``"file:PATH"``. Short for
            ``codec=EncryptedCodec(encryption)``. A plaintext cache is read and encrypted at
            its next write; one this key cannot open raises
            :class:`~msal_persist.DecryptionError` and is left untouched.
        coordinate_refresh: Let calls made through
            :func:`~msal_persist.coordinate_refreshes` share refreshes: when many processes
            need the same refresh, one asks the authority and the others take its token
            from the cache. ``False`` makes every process refresh on its own. Needs a
            store that offers refresh leases (the file store does).
        refresh_timeout: Seconds a coordinated call waits for another process's refresh
            before it (or one of the other waiters) refreshes instead; a call waits at
            most twice this long in all. ``None`` waits as long as that refresh lasts.

    Attributes:
        store: The :class:`~msal_persist.Store` holding the bytes (for the default file
            store, ``store.saves`` counts files written and ``store.lock`` is the
            :class:`~msal_persist.CrossProcessLock` on ``<path>.lockfile``).
        location: The chosen :class:`~msal_persist.CacheLocation` (path and rule), or
            ``None`` when a ``store`` was given.
        refresh_coordinator: The state of coordinated refreshes (private API; its
            ``enabled`` says whether refreshes are coordinated).
    """

    def __init__(  # noqa: PLR0913 - each option is one documented keyword
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        app_name: str = DEFAULT_APP_NAME,
        lock_timeout: float | None = DEFAULT_LOCK_TIMEOUT,
        fsync: bool = True,
        store: Store | None = None,
        codec: Codec | None = None,
        encryption: KeySource | bytes | str | None = None,
        coordinate_refresh: bool = True,
        refresh_timeout: float | None = DEFAULT_REFRESH_TIMEOUT,
    ) -> None:
        """Resolve the location; nothing is read or written until msal asks."""
        if encryption is not None:
            if codec is not None:
                raise TypeError("give either codec or encryption, not both")
            codec = EncryptedCodec(encryption)
        location: CacheLocation | None = None
        if store is None:
            location = default_cache_path(app_name, explicit=path)
            store = FileStore(location.path, lock_timeout=lock_timeout, fsync=fsync)
        elif path is not None:
            raise TypeError("give either path or store, not both")
        super().__init__(store, codec)
        self.location = location
        self._in_search = threading.local()
        leases = store if coordinate_refresh and isinstance(store, RefreshLeases) else None
        self.refresh_coordinator = RefreshCoordinator(leases, refresh_timeout, self._shown)

    def __repr__(self) -> str:
        """Show the file (or the store), which is what identifies the cache."""
        where = self.store if self.location is None else str(self.location.path)
        return f"{type(self).__name__}({where!r})"

    @property
    def path(self) -> os.PathLike[str]:
        """The cache file (a file store's only).

        Raises:
            AttributeError: The cache lives in a store that is not a file.
        """
        if self.location is None:
            raise AttributeError("this cache lives in a store, not in a file of its own")
        return self.location.path

    def search(self, credential_type: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Like msal's ``search``, on the newest content of the file."""
        self._refresh()
        entries = super().search(credential_type, *args, **kwargs)
        # msal's first step looks the access token up through _get(); the cache was just
        # refreshed, so that lookup need not stat the file a second time. Only msal's own
        # code runs during this step, and the flag is down before anything is yielded.
        self._in_search.active = True
        try:
            first = next(entries, _END)
        finally:
            self._in_search.active = False
        if first is not _END:
            yield first
            yield from entries
        # Reached only when the caller asked past the last entry: for msal's access-token
        # lookup, that means it found none it can use and will now go to the authority.
        if credential_type == ACCESS_TOKEN and self._refresh_expected(kwargs):
            yield from self._await_refresh(credential_type, *args, **kwargs)

    def _refresh_expected(self, kwargs: dict[str, Any]) -> bool:
        return (
            self.refresh_coordinator.expecting()
            and kwargs.get("target") is not None
            and not self._in_own_transaction()
        )

    def _in_own_transaction(self) -> bool:
        # Only the thread in a transaction holds _lock while _depth > 0; if another thread
        # holds it, this one is not in a transaction.
        if not self._lock.acquire(blocking=False):
            return False
        try:
            return self._depth > 0
        finally:
            self._lock.release()

    def _await_refresh(self, credential_type: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        coordinator = self.refresh_coordinator
        turn = coordinator.take_turn(refresh_key(kwargs.get("query"), kwargs.get("target")))
        if turn is Turn.ON_OWN:
            return  # this call refreshes: msal goes on to the authority
        # We hold the lease. Another refresher may have stored its token since msal's search
        # (while we waited, or just before we took the lease): offer msal what is there now.
        # If msal takes a token, it closes this generator here; else nothing usable came.
        self._refresh()
        yield from super().search(credential_type, *args, **kwargs)
        if turn is Turn.WAITED:
            coordinator.raise_if_failed()

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
                credential_type == ACCESS_TOKEN
                and new_key_value_pairs is None
                and expired(old_entry, int(time.time()))
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
        with Transaction(self, sync=False):
            existed = self.store.remove()
            self._replace_state({})
            self._known, self._synced = ABSENT, True
            self._pending_adds.clear()
            self._lazy_removals.clear()
        return existed

    def reencrypt(
        self, key: KeySource | bytes | str | None, *, context: str | bytes | None = None
    ) -> None:
        """Rewrite the cache under another key (``None``: in plaintext), in one locked write.

        The cache is read with the current codec and written with the new one while the
        store's lock is held, so no process can write in between; from then on this
        instance reads and writes with the new key. Other processes need the new key to
        read the cache (a :class:`~msal_persist.KeyringKey` or
        :class:`~msal_persist.FileKey` is read again when a cache turns out to be sealed
        under another key). The old key is not deleted.

        Args:
            key: The new key source, as for ``encryption``; ``None`` writes plaintext.
            context: The new codec's context; by default the current one's.

        Raises:
            DecryptionError: The cache cannot be read with the current key.
            KeyUnavailableError: The new key cannot be had.
            LockTimeoutError: Another process held the lock past ``lock_timeout``.
            CacheFileError: The store cannot be read or written.
        """
        old = self.codec
        if context is None:
            context = old.context if isinstance(old, EncryptedCodec) else b""
        inner = old.inner if isinstance(old, EncryptedCodec) else old
        new = inner if key is None else EncryptedCodec(key, context=context, inner=inner)
        with self.transaction():
            self.codec = new
            try:
                self.has_state_changed = True
                self._commit_locked()
            except BaseException:
                self.codec = old
                raise

    def remove_accounts(self, home_account_ids: Iterable[str]) -> dict[str, int]:
        """Remove every entry of these accounts, for every client id, in one write.

        Every entry of the ``Account``, ``AccessToken``, ``RefreshToken`` and ``IdToken``
        sections whose ``home_account_id`` is one of ``home_account_ids`` (compared
        case-insensitively) goes, whichever application (client id) it belongs to, from the
        newest content of the store; app metadata and the sections of other tools stay.
        msal's ``remove_account()`` only removes what one application's client id can see,
        and calls ``modify()`` once per entry.

        Inside a :meth:`~msal_persist.PersistedTokenCache.transaction` the removal joins
        it and is written when it ends; outside one, it is a transaction of its own. Either
        way other processes see the accounts gone all at once, in one write (none when
        nothing matched).

        Returns:
            How many entries went, per section, in the order above (zeros included).

        Raises:
            LockTimeoutError: Another process held the lock past ``lock_timeout``.
            CacheFileError: The file cannot be read or written.
        """
        wanted = {home_id.casefold() for home_id in home_account_ids}
        removed: dict[str, int] = {}
        with self.transaction():
            for section in ACCOUNT_SECTIONS:
                entries = self._cache.get(section, {})
                gone = [
                    key
                    for key, entry in entries.items()
                    if isinstance(home_id := entry.get("home_account_id"), str)
                    and home_id.casefold() in wanted
                ]
                for key in gone:
                    del entries[key]
                removed[section] = len(gone)
            if any(removed.values()):
                self.has_state_changed = True
        return removed


def _refresh_token_update_follows(event: dict[str, Any]) -> bool:
    # For a refresh-token grant msal removes the new refresh token from the response it
    # hands to add(), then passes it to update_rt(). With also_save_rt it leaves it in.
    response = event.get("response") or {}
    return (
        event.get("grant_type") == "refresh_token"
        and "refresh_token" not in response
        and "error" not in response
    )
