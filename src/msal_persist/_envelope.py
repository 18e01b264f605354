r"""The encrypted envelope's layout: recognised by every codec, opened only by one with a key.

An encrypted cache is stored as one binary envelope::

    offset  size  field
    0       4     MAGIC, b"\x89MPC": 0x89 starts no JSON text and no UTF-8 character
    4       1     format version (1)
    5       1     algorithm (1: AES-256-GCM)
    6       8     key id (see :func:`~msal_persist._keys.key_id_of`), never the key
    14      12    nonce, fresh and random for every write
    26      ...   ciphertext of the JSON document, then the 16-byte GCM tag

The first 26 bytes (the header) are authenticated with the ciphertext, together with the
codec's *context*, so no field can be changed without the tag failing.

This module needs no cryptography library: the plain codec uses it to tell an encrypted
cache from a corrupt one, so that such a file is never set aside as "not a cache".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ._errors import DecryptionError

__all__ = [
    "ALGORITHM_AES_256_GCM",
    "HEADER_SIZE",
    "KEY_ID_SIZE",
    "MAGIC",
    "NONCE_SIZE",
    "TAG_SIZE",
    "VERSION",
    "Envelope",
    "header",
    "is_damaged_envelope",
    "is_envelope",
    "read_envelope",
    "stored_key_id",
]

MAGIC: Final = b"\x89MPC"
VERSION: Final = 1
ALGORITHM_AES_256_GCM: Final = 1
KEY_ID_SIZE: Final = 8
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
_KEY_ID_AT: Final = len(MAGIC) + 2
HEADER_SIZE: Final = _KEY_ID_AT + KEY_ID_SIZE + NONCE_SIZE


@dataclass(frozen=True)
class Envelope:
    """The fields of one envelope, as stored (nothing verified yet)."""

    key_id: bytes
    nonce: bytes
    header: bytes
    sealed: bytes
    """The ciphertext followed by the tag."""

    @property
    def key_id_text(self) -> str:
        """The key id as printed in errors and by ``doctor``."""
        return self.key_id.hex()


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` claims to be an encrypted cache (by its magic bytes)."""
    return data[: len(MAGIC)] == MAGIC


def is_damaged_envelope(data: bytes) -> bool:
    """Whether ``data`` is an envelope with one byte of its magic changed.

    Such bytes are no JSON either; calling them "not a cache" would set an encrypted cache
    aside over a single flipped bit, so they are reported as an envelope that does not
    verify instead.
    """
    head = data[: len(MAGIC)]
    same = sum(a == b for a, b in zip(head, MAGIC, strict=False))
    return len(data) >= HEADER_SIZE + TAG_SIZE and same == len(MAGIC) - 1


def stored_key_id(data: bytes) -> str | None:
    """The key id an envelope names (hex), if it is long enough to name one."""
    end = _KEY_ID_AT + KEY_ID_SIZE
    return data[_KEY_ID_AT:end].hex() if is_envelope(data) and len(data) >= end else None


def header(key_id: bytes, nonce: bytes) -> bytes:
    """The authenticated header of a new envelope."""
    return MAGIC + bytes((VERSION, ALGORITHM_AES_256_GCM)) + key_id + nonce


def read_envelope(data: bytes, expected_key_id: str | None) -> Envelope:
    """Split an envelope into its fields.

    Raises:
        DecryptionError: ``data`` is no envelope, is cut short, or has a version or
            algorithm this release cannot read. Its ``path`` is empty: the caller knows
            where the bytes came from.
    """
    if not is_envelope(data):
        reason = "its format marker is damaged" if is_damaged_envelope(data) else "not one"
        raise DecryptionError("", None, expected_key_id, f"not an encrypted cache: {reason}")
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise DecryptionError(
            "",
            stored_key_id(data),
            expected_key_id,
            f"the envelope is cut short ({len(data)} bytes)",
        )
    version, algorithm = data[len(MAGIC)], data[len(MAGIC) + 1]
    key_id = data[_KEY_ID_AT : _KEY_ID_AT + KEY_ID_SIZE]
    if version != VERSION or algorithm != ALGORITHM_AES_256_GCM:
        raise DecryptionError(
            "",
            key_id.hex(),
            expected_key_id,
            f"envelope format {version}, algorithm {algorithm}: written by a newer "
            "msal-persist, or damaged",
        )
    return Envelope(
        key_id=key_id,
        nonce=data[_KEY_ID_AT + KEY_ID_SIZE : HEADER_SIZE],
        header=data[:HEADER_SIZE],
        sealed=data[HEADER_SIZE:],
    )
