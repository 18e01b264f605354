"""What counts as an msal token cache document (the unified cache schema), and its codec.

With the optional ``fast`` extra (orjson) installed, documents are decoded and encoded
several times faster; the bytes are the same JSON document either way (compact, ASCII
only, as peers that read with a locale encoding expect).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

try:  # the optional "fast" extra
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads: Callable[[bytes | str], Any] | None = None
    _fast_dumps: Callable[[Any], bytes] | None = None
else:
    _fast_loads, _fast_dumps = orjson.loads, orjson.dumps

__all__ = ["SECTIONS", "NotACacheError", "encode_document", "parse_document"]

SECTIONS: Final = frozenset({"AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata"})
"""The sections msal for Python indexes into; others (from other SDKs) are kept untouched."""


class NotACacheError(ValueError):
    """The bytes are not an msal cache document. The message never quotes the content."""


def parse_document(data: str | bytes) -> dict[str, Any]:
    """Decode a cache document, insisting on the shape msal will index into.

    Raises:
        NotACacheError: Empty, not JSON, not an object, or a known section that is not a
            mapping of entries.
    """
    if not data.strip():
        raise NotACacheError("the file is empty")
    try:
        state = _fast_loads(data) if _fast_loads is not None else None
    except ValueError:
        state = None  # orjson is stricter (lone surrogates): the stdlib gives the verdict
    try:
        if state is None:
            state = json.loads(data)
    except json.JSONDecodeError as error:
        # error.msg is a fixed phrase such as "Expecting value": never the file's content.
        raise NotACacheError(
            f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
        ) from None
    except UnicodeDecodeError:
        raise NotACacheError("not UTF-8 text") from None
    except RecursionError:
        raise NotACacheError("JSON nested too deeply") from None
    if not isinstance(state, dict):
        raise NotACacheError(f"a JSON {type(state).__name__}, not an object")
    for section in sorted(SECTIONS.intersection(state)):
        entries = state[section]
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise NotACacheError(f"section {section} is not a mapping of entries")
    return state


def encode_document(state: dict[str, Any]) -> bytes:
    """Encode a cache document compactly (msal's own ``indent=4`` is the same document).

    The C encoder (or orjson) is several times faster than the pure-Python one that
    ``indent`` forces. Non-ASCII text is escaped, as msal's ``serialize()`` does.
    """
    if _fast_dumps is not None:
        try:
            data = _fast_dumps(state)
        except TypeError:
            pass  # a value orjson does not take (e.g. a non-str key): the stdlib decides
        else:
            if data.isascii():
                return data
    return json.dumps(state, separators=(",", ":")).encode()
