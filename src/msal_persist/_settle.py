"""Telling a peer's write in progress from a bad document, when bytes do not decode.

Some writers rewrite the cache file in place instead of replacing it: msal-extensions
truncates and then writes (under its lock), and msal's own recipe ignores the lock
altogether. Bytes that do not decode may be such a write, caught half done. They are judged
bad only once they stayed the same, and still did not decode, for
:data:`SETTLE_SECONDS`.

:func:`settle` is that rule. :func:`read_settled` applies it without the lock, for a reader
that must never change a byte (``msal-persist show``, ``doctor``, the preview of ``clear``
and ``remove``): it only reads, and what it judges bad it reports instead of setting aside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from ._codec import Codec, Decoded, JsonCodec, NotACacheError
from ._errors import DecryptionError
from ._signals import interruptible
from ._store import Snapshot, Store

__all__ = ["SETTLE_SECONDS", "Reading", "read_settled", "settle"]

SETTLE_SECONDS: Final = 0.5
"""How long bytes that do not decode must stay unchanged before they are judged bad."""


@dataclass(frozen=True)
class Reading:
    """A store's content read without its lock, and what it decoded to.

    Attributes:
        snapshot: The bytes read (``snapshot.data`` is ``None``: the store holds no cache).
        decoded: The document as a cache hands it to msal, or ``None`` when there is no
            cache or the bytes are not a cache document.
        problem: Why the bytes are not a cache document (never quoting them); ``None``
            when they are, or when there are none.
    """

    snapshot: Snapshot
    decoded: Decoded | None
    problem: str | None = None


def settle(
    store: Store, codec: Codec, snapshot: Snapshot, *, seconds: float = SETTLE_SECONDS
) -> Snapshot | None:
    """Give bytes that do not decode time to become a document; ``None`` if they don't.

    ``snapshot`` holds bytes ``codec`` refused. The store is read again until its bytes
    decode or vanish (that snapshot is returned), or until they stayed the same, and did not
    decode, for ``seconds`` (``None``: they are bad). Bytes that never stop changing and
    never decode are judged after ten times ``seconds``.
    """
    started = stable_since = time.monotonic()
    while time.monotonic() - stable_since < seconds:
        if time.monotonic() - started > 10 * seconds:
            break
        with interruptible():  # the glue settles under its lock, with Ctrl-C held back
            time.sleep(seconds / 10)
        again = store.load()
        if again.data != snapshot.data:
            stable_since = time.monotonic()
        snapshot = again
        if snapshot.data is None:
            return snapshot
        try:
            codec.decode(snapshot.data)
        except NotACacheError:
            continue
        return snapshot
    return None


def read_settled(store: Store, codec: Codec | None = None) -> Reading:
    """Read and decode without the lock, giving bytes that do not decode time to settle.

    Nothing is written, moved or locked, so a reader may call this whatever it is allowed
    to change. Bytes that decode at once are read and decoded once.

    Raises:
        CacheFileError: As the store's ``load`` does (unreadable, not a regular file).
        DecryptionError: The cache is encrypted and ``codec`` cannot open it.
    """
    codec = JsonCodec() if codec is None else codec
    snapshot = store.load()
    while snapshot.data is not None:
        try:
            return Reading(snapshot, codec.decode(snapshot.data))
        except DecryptionError as error:
            raise error.at(store.display_name) from None
        except NotACacheError as error:
            settled = settle(store, codec, snapshot)
            if settled is None:
                return Reading(snapshot, None, str(error))
            snapshot = settled  # a document now, or gone: decoded (or not) on the next turn
    return Reading(snapshot, None)
