"""Text from outside (paths, file content) made safe to print on one line.

A path or a field of a cache file may hold a newline, an escape sequence or another control
character; printed raw, it could forge a log or CLI line or drive the user's terminal.
"""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = ["printable"]

# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str | os.PathLike[str]) -> str:
    r"""Return ``text`` with every control character shown as an escape (``\n``, ``\x1b``).

    Ordinary text, including non-ASCII letters, is returned unchanged.
    """
    value = os.fspath(text)
    if not _CONTROL.search(value):
        return value
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], value)
