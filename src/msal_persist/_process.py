"""Facts about other processes on this host, for deciding whether a leftover is stale."""

from __future__ import annotations

import os
import sys

__all__ = ["pid_is_running"]


def pid_is_running(pid: int) -> bool:
    """Tell whether ``pid`` names a live (not zombie) process on this host.

    Returns ``True`` when in doubt: only a provably dead pid gives ``False``.
    """
    if pid <= 0 or sys.platform == "win32":
        # os.kill(pid, 0) on Windows would terminate the process, not probe it.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as status:
            # The state follows the parenthesised command name, which may itself hold ") ".
            state = status.read().rpartition(b") ")[2][:1]
    except OSError:
        return True
    return state not in {b"Z", b"X"}
