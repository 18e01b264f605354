"""What counts as an msal token cache document (the unified cache schema)."""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["SECTIONS", "NotACacheError", "parse_document"]

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
