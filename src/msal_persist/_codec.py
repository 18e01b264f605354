"""The codec: bytes to an msal token cache document and back, in strict JSON.

With the optional ``fast`` extra (orjson) installed, documents are decoded and encoded
several times faster; the bytes are the same JSON document either way (compact, ASCII
only, as peers that read with a locale encoding expect).

:class:`JsonCodec` is the default codec of :class:`~msal_persist.PersistedTokenCache`: msal's
own format, shared with every other MSAL tool. A codec is anything with ``decode`` and
``encode`` as :class:`Codec` describes (an encrypting codec wraps this one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from itertools import chain
from typing import Any, Final, Protocol

from ._envelope import is_damaged_envelope, is_envelope, stored_key_id
from ._errors import DecryptionError
from ._schema import (
    MAX_DEPTH,
    OVERLONG,
    SECTIONS,
    Decoded,
    InexactError,
    NotACacheError,
    Overlong,
    checked_shape,
    judge,
)

try:  # the optional "fast" extra
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads: Callable[[bytes | str], Any] | None = None
    _fast_dumps: Callable[[Any], bytes] | None = None
else:
    _fast_loads, _fast_dumps = orjson.loads, orjson.dumps

__all__ = [
    "MAX_DEPTH",
    "SECTIONS",
    "Codec",
    "Decoded",
    "JsonCodec",
    "NotACacheError",
    "decode_document",
    "encode_document",
    "parse_document",
]


def parse_document(data: str | bytes) -> dict[str, Any]:
    """Decode a cache document, insisting only on the shape msal will index into.

    Entries are not judged: ``NaN`` and ``Infinity`` come back as floats. A cache hands
    msal what :func:`decode_document` keeps instead.

    Raises:
        NotACacheError: Empty, not JSON, not an object, a known section that is not a
            mapping of entries, or an integer too long for Python to read.
    """
    state, _ = _load(data, keep_overlong=False)
    return checked_shape(state)


def decode_document(data: str | bytes) -> Decoded:
    """Decode a cache document and keep what msal can use and strict JSON can carry.

    Each entry of msal's sections must hold the fields msal reads, with types msal can
    use (see :data:`_RULES`); any other field, and every section of another tool, must be
    strict JSON no deeper than :data:`MAX_DEPTH`. An entry or a section that fails is left
    out and described in :attr:`Decoded.problems`; the rest is kept as it is.

    Raises:
        NotACacheError: For the whole document, as :func:`parse_document` does (empty,
            not JSON, not an object, a known section that is not a mapping of entries).
    """
    state, exact = _load(data, keep_overlong=True)
    try:
        return judge(checked_shape(state), exact=exact)
    except InexactError:
        # orjson reads an integer beyond 64 bits as the nearest float; only the stdlib
        # keeps its exact value, which is what must be written back.
        state = _loads_stdlib(data, keep_overlong=True)
        return judge(state, exact=True)


def encode_document(state: dict[str, Any]) -> bytes:
    """Encode a cache document compactly (msal's own ``indent=4`` is the same document).

    The C encoder (or orjson) is several times faster than the pure-Python one that
    ``indent`` forces. Non-ASCII text is escaped, as msal's ``serialize()`` does. Only
    strict JSON is written: what cannot be written exactly raises rather than being
    written some other way.

    Raises:
        ValueError: ``state`` holds NaN or an infinite number, refers to itself, or is
            nested too deeply to encode.
        TypeError: ``state`` holds something that is not JSON (bytes, a set...).
    """
    if _fast_dumps is not None:
        try:
            data = _fast_dumps(state)
        except TypeError:
            pass  # integers beyond 64 bits, lone surrogates, deep nesting: the stdlib decides
        else:
            # orjson silently writes NaN and infinities as null: trust it only without them.
            if data.isascii() and not _holds_nonfinite(state):
                return data
    try:
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise ValueError("the document is nested too deeply to encode") from None


def _int_or_overlong(text: str) -> int | Overlong:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return OVERLONG


def _load(data: str | bytes, *, keep_overlong: bool) -> tuple[Any, bool]:
    """Decode JSON; return the value and whether the stdlib decoded it (exact integers)."""
    if not data.strip():
        raise NotACacheError("the file is empty")
    if _fast_loads is not None:
        try:
            return _fast_loads(data), False
        except ValueError:
            pass  # orjson is stricter (lone surrogates, 1e999, NaN): the stdlib decides
    return _loads_stdlib(data, keep_overlong=keep_overlong), True


def _loads_stdlib(data: str | bytes, *, keep_overlong: bool) -> Any:
    parse_int: Callable[[str], Any] | None = None
    while True:
        try:
            return json.loads(data, parse_int=parse_int)
        except json.JSONDecodeError as error:
            # error.msg is a fixed phrase such as "Expecting value": never the file's content.
            raise NotACacheError(
                f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
            ) from None
        except UnicodeDecodeError:
            raise NotACacheError("not UTF-8 text") from None
        except RecursionError:
            raise NotACacheError("JSON nested too deeply") from None
        except ValueError:
            # int() refuses integer literals longer than sys.get_int_max_str_digits().
            if not keep_overlong or parse_int is not None:
                raise NotACacheError("holds an integer too long to read") from None
            parse_int = _int_or_overlong


# -- encoding -------------------------------------------------------------------------------

_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _holds_nonfinite(state: dict[str, Any]) -> bool:
    """Whether NaN or an infinity is anywhere in ``state`` (encoded by orjson, so acyclic)."""
    for section in state.values():
        try:
            types = {*map(type, chain.from_iterable(map(dict.values, section.values())))}
        except (AttributeError, TypeError):  # not a mapping of entries: look at everything
            types = None
        if types is None or not types <= _SCALARS:
            pending = [section]
            while pending:
                item = pending.pop()
                if isinstance(item, float):
                    if not math.isfinite(item):
                        return True
                elif isinstance(item, dict):
                    pending.extend(item.values())
                elif isinstance(item, (list, tuple)):
                    pending.extend(item)
    return False


class Codec(Protocol):
    """Turns the bytes a store holds into the document msal may see, and back.

    ``decode`` raises :class:`NotACacheError` for bytes that are no cache document at all
    (the store then sets them aside), :class:`~msal_persist.DecryptionError` for bytes it
    cannot decrypt (left exactly as they are), and reports entries it left out in
    :class:`Decoded`; ``encode`` raises ``ValueError`` rather than write what ``decode``
    would not read back exactly.
    """

    def decode(self, data: bytes) -> Decoded:
        """Decode ``data``; keep what msal can use."""
        ...

    def encode(self, state: dict[str, Any]) -> bytes:
        """Encode ``state`` exactly."""
        ...


class JsonCodec:
    """msal's own format: the unified-schema JSON document, compact and strict."""

    __slots__ = ()

    def __repr__(self) -> str:
        """Name the codec."""
        return "JsonCodec()"

    def decode(self, data: bytes) -> Decoded:
        """Decode ``data`` with :func:`decode_document`.

        Raises:
            DecryptionError: ``data`` is an encrypted cache: that is no corruption, and it
                must not be set aside; it needs the key.
            NotACacheError: ``data`` is no cache document.
        """
        if is_envelope(data) or is_damaged_envelope(data):
            key_id = stored_key_id(data)
            raise DecryptionError(
                "",
                key_id,
                None,
                f"it is encrypted (key {key_id}), and this cache was opened without a key: "
                "pass encryption=... (CLI: --key), as the processes that write it do",
            )
        return decode_document(data)

    def encode(self, state: dict[str, Any]) -> bytes:
        """Encode ``state`` with :func:`encode_document`."""
        return encode_document(state)
