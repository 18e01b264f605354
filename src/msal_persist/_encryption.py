"""The encrypting codec: msal's JSON document sealed with AES-256-GCM.

It wraps another codec (msal's own JSON by default) and works with any store: a store sees
opaque bytes, and its cheap "changed?" check is unchanged, so a cache hit decrypts nothing.
Every write draws a fresh random 96-bit nonce; the envelope's header (format, key id, nonce;
see :mod:`~msal_persist._envelope`) and the codec's *context* are authenticated with the
document.

What a reader of the store may find, and what it gets:

- an envelope sealed with this key and context: the document;
- a plaintext msal cache (encryption was just turned on): the document, logged once; the
  next write encrypts it;
- an envelope it cannot open (another key, another context, a changed byte, cut short):
  :class:`~msal_persist.DecryptionError`, naming the key id. The glue then writes nothing
  and sets nothing aside: the stored bytes stay exactly as they are.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Final

from ._codec import Codec, JsonCodec
from ._envelope import NONCE_SIZE, header, is_damaged_envelope, is_envelope, read_envelope
from ._errors import DecryptionError
from ._keys import KeySource, RawKey, key_id_of, key_source
from ._schema import Decoded

try:  # the optional "encryption" extra
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError:  # pragma: no cover - depends on the environment
    _HAVE_CRYPTOGRAPHY = False
else:
    _HAVE_CRYPTOGRAPHY = True

__all__ = ["EncryptedCodec", "as_key_source"]

_LOG: Final = logging.getLogger("msal_persist")


def as_key_source(key: KeySource | bytes | str) -> KeySource:
    """Accept a key source, 32 key bytes, or a key source's text form (``"keyring"``...)."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        return RawKey(bytes(key))
    if isinstance(key, str):
        return key_source(key)
    return key


class EncryptedCodec:
    """Seals each document in an AES-256-GCM envelope under one key.

    Args:
        key: Where the key comes from: a :class:`~msal_persist.KeyringKey`,
            :class:`~msal_persist.EnvironmentKey`, :class:`~msal_persist.FileKey` or
            :class:`~msal_persist.RawKey`; 32 bytes; or a key source's text form
            (``"keyring"``, ``"keyring:NAME"``, ``"env:VARIABLE"``, ``"file:PATH"``).
        context: Bound into every envelope: an envelope sealed under another context does
            not open. Give caches that share one key distinct contexts (a user's partition
            key, say) so that one cache's bytes cannot be passed off as another's.
        inner: The codec of the document inside the envelope; msal's JSON by default.

    Raises:
        ImportError: The ``encryption`` extra (``cryptography``) is not installed.
        KeyUnavailableError: ``key`` names the OS keyring and no usable one is found.
        ValueError: ``key`` is text that names no key source.
    """

    __slots__ = (
        "_aead",
        "_context",
        "_fetch_lock",
        "_key_id",
        "_plaintext_seen",
        "_tried",
        "inner",
        "source",
    )

    def __init__(
        self,
        key: KeySource | bytes | str,
        *,
        context: str | bytes = b"",
        inner: Codec | None = None,
    ) -> None:
        """Prepare; the key itself is fetched when first needed, once per process."""
        if not _HAVE_CRYPTOGRAPHY:
            raise ImportError(
                "encryption needs the cryptography package: pip install 'msal-persist[encryption]'"
            )
        self.source: Final = as_key_source(key)
        self.inner: Final[Codec] = JsonCodec() if inner is None else inner
        self._context = context.encode() if isinstance(context, str) else bytes(context)
        self._fetch_lock = threading.Lock()
        self._aead: Any = None
        self._key_id: bytes | None = None
        self._tried: set[bytes] = set()
        self._plaintext_seen = False

    def __repr__(self) -> str:
        """Name the key source (never the key)."""
        return f"EncryptedCodec({self.source!r})"

    def __reduce__(self) -> Any:
        """Refuse: pickling would write the key out."""
        raise TypeError("EncryptedCodec holds a key and cannot be pickled")

    @property
    def context(self) -> bytes:
        """What every envelope is bound to (see the class docstring)."""
        return self._context

    @property
    def key_id(self) -> str | None:
        """The id of the key in use (hex), once it was fetched; never the key."""
        return None if self._key_id is None else self._key_id.hex()

    # -- the codec ----------------------------------------------------------------------

    def decode(self, data: bytes) -> Decoded:
        """Open the envelope (or read a plaintext cache) and decode the document.

        Raises:
            DecryptionError: The envelope does not open with this key and context.
            KeyUnavailableError: The key source cannot be used.
            NotACacheError: Neither an envelope nor a cache document.
        """
        if not is_envelope(data) and not is_damaged_envelope(data):
            decoded = self.inner.decode(data)  # NotACacheError: the glue's usual rules
            if not self._plaintext_seen:
                self._plaintext_seen = True
                _LOG.warning(
                    "the token cache is not encrypted yet: it is read as it is, and "
                    "its next write encrypts it"
                )
            return decoded
        envelope = read_envelope(data, self.key_id)
        aead = self._aead_for(envelope.key_id)
        try:
            document: bytes = aead.decrypt(
                envelope.nonce, envelope.sealed, envelope.header + self._context
            )
        except InvalidTag:
            raise DecryptionError(
                "",
                envelope.key_id_text,
                self.key_id,
                "the envelope does not verify: it was changed or damaged, or it belongs "
                "to another cache (another context); it was left as it is",
            ) from None
        return self.inner.decode(document)

    def encode(self, state: dict[str, Any]) -> bytes:
        """Encode ``state`` with the inner codec and seal it under a fresh nonce.

        Raises:
            KeyUnavailableError: The key source cannot be used.
            ValueError: The inner codec cannot encode ``state`` exactly.
        """
        document = self.inner.encode(state)
        aead, key_id = self._current(create=True)
        nonce = os.urandom(NONCE_SIZE)
        head = header(key_id, nonce)
        sealed: bytes = aead.encrypt(nonce, document, head + self._context)
        return head + sealed

    # -- the key --------------------------------------------------------------------------

    def _current(self, *, create: bool) -> tuple[Any, bytes]:
        """The cipher and key id, fetching the key the first time."""
        with self._fetch_lock:
            if self._aead is None or self._key_id is None:
                self._load(create=create)
            if self._aead is None or self._key_id is None:
                raise DecryptionError(
                    "",
                    None,
                    None,
                    f"there is no key yet in {self.source.description}",
                )
            return self._aead, self._key_id

    def _aead_for(self, wanted: bytes) -> Any:
        """The cipher for key id ``wanted``: ours, or ours after asking the source again."""
        with self._fetch_lock:
            if self._aead is None:
                self._load(create=False)
            elif wanted != self._key_id and self.source.reloadable and wanted not in self._tried:
                # Sealed under another key: the keyring item or the secret file may have
                # been rotated since this process read it. Ask once per key id seen.
                self._tried.add(wanted)
                self._load(create=False, again=True)
            if self._aead is None:
                raise DecryptionError(
                    "",
                    wanted.hex(),
                    None,
                    f"it is encrypted with key {wanted.hex()}, and {self.source.description} "
                    "holds no key",
                )
            if wanted != self._key_id:
                raise DecryptionError(
                    "",
                    wanted.hex(),
                    self.key_id,
                    f"it is encrypted with key {wanted.hex()}, and {self.source.description} "
                    f"holds key {self.key_id}; it was left as it is",
                )
            return self._aead

    def _load(self, *, create: bool, again: bool = False) -> None:
        key = self.source.fetch(create=create, again=again)
        if key is None:
            return
        self._aead = AESGCM(key)
        self._key_id = key_id_of(key)
        _LOG.debug("encryption key %s from %s", self._key_id.hex(), self.source.description)
