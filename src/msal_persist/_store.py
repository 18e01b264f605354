"""What the msal glue needs from a place that holds a cache: the store protocol.

A store holds the bytes of one cache document and decides how writers exclude each other.
:class:`~msal_persist.PersistedTokenCache` talks to a store only through :class:`Store`, so
a new store (Redis, next) plugs in without the glue knowing where bytes live:

- reads are lock-free: :meth:`Store.load` returns the bytes with a *version*, and
  :meth:`Store.unchanged` answers "is this still the version?" as cheaply as the store can
  (for a file, one ``lstat``), because msal reads the cache several times per token;
- writes happen between :meth:`Store.acquire` and :meth:`Store.release` (exclusive across
  processes and threads), on top of a fresh :meth:`Store.load`, by one atomic
  :meth:`Store.save`; :meth:`Store.make_durable` may finish the job after the release;
- bad content is never destroyed: :meth:`Store.set_aside` keeps it somewhere the user
  can find it.

Versions are opaque to the glue: it only compares them for equality. Equal versions
*usually* mean equal bytes; under the lock, the glue still compares the bytes.

A store may also offer *refresh leases* (:class:`RefreshLeases`, optional): one lease per
token being refreshed, so that among many processes needing the same refresh only one asks
the authority (see :mod:`~msal_persist._refresh`). The glue checks for it with
``isinstance(store, RefreshLeases)``; a store without it simply gets no coordination.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

__all__ = ["ABSENT", "RefreshLease", "RefreshLeases", "Snapshot", "Store"]


@dataclass(frozen=True)
class Snapshot:
    """The bytes of the cache as read at one moment, and the version they are.

    ``data`` and ``version`` are both ``None`` when the store holds no cache.
    """

    data: bytes | None
    version: Hashable | None

    @property
    def exists(self) -> bool:
        """Whether the store held a cache when it was read."""
        return self.data is not None


ABSENT: Final = Snapshot(None, None)
"""The snapshot of a store that holds no cache."""


class Store(Protocol):
    """Where the bytes of one cache live, and how writers exclude each other."""

    @property
    def display_name(self) -> str:
        """How log lines and errors name this store (printable, never a secret)."""
        ...

    def unchanged(self, version: Hashable) -> bool:
        """Whether the store still holds ``version``; cheap, lock-free, never raises."""
        ...

    def load(self) -> Snapshot:
        """Read the current bytes and their version (lock-free, never a torn read)."""
        ...

    def acquire(self) -> None:
        """Enter the exclusive write section (across processes); holds it or raises."""
        ...

    def release(self) -> None:
        """Leave the exclusive write section."""
        ...

    def prepare(self) -> None:
        """Housekeeping once per cache instance, inside the write section."""
        ...

    def save(self, data: bytes) -> Hashable:
        """Replace the bytes atomically (inside the write section); return the new version."""
        ...

    def make_durable(self) -> None:
        """Finish making the last save durable; may run after :meth:`release`."""
        ...

    def remove(self) -> bool:
        """Delete the cache (inside the write section); return whether there was one."""
        ...

    def set_aside(self, data: bytes | None = None) -> str | None:
        """Keep bad content where the user can find it; return where (``None``: nothing).

        ``None`` moves the current content aside (the cache is then empty); bytes keep a
        copy of those bytes and leave the cache as it is.
        """
        ...


class RefreshLease(Protocol):
    """The right to refresh one token, exclusive across processes and threads.

    A lease is independent of the store's write section: it is taken before, and held
    around, a whole token request, while the write section is only taken to store the
    answer. The glue never asks for a lease while it holds the write section (lock order:
    lease, then msal's ``_lock``, then the write section).

    A lease must end by itself when its holder dies (an OS lock, a server-side expiry), and
    every wait for it is bounded by the ``timeout`` given.

    Besides exclusion, a lease carries one small note, the *failure record*: the holder
    leaves it when its refresh failed, so that those who waited return that failure instead
    of each asking the authority again. The record is opaque bytes to the store.
    """

    def acquire(self, timeout: float | None) -> bool:
        """Take the lease, waiting up to ``timeout`` seconds (``0``: try once).

        Returns whether it is held now; ``False`` means another holder kept it past the
        timeout. Raises (a ``KeyboardInterrupt`` included) only holding nothing.
        """
        ...

    def release(self) -> None:
        """Give the lease back."""
        ...

    def failure(self) -> bytes | None:
        """The failure record last left (``None``: none); lock-free, never raises."""
        ...

    def record_failure(self, record: bytes | None) -> None:
        """Leave ``record`` for those waiting (``None`` removes it); only while held."""
        ...


@runtime_checkable
class RefreshLeases(Protocol):
    """A store that can coordinate refreshes: one :class:`RefreshLease` per key."""

    def refresh_lease(self, key: str) -> RefreshLease:
        """The lease for ``key`` (short, ``[0-9a-f]``); the same object for the same key."""
        ...
