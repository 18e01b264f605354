"""``doctor``'s checks of what lies beside a cache file: its lock file, and leftovers.

The lock file is judged from ``lstat`` and the pid it records, as writers judge it, and is
never opened for writing or followed; leftovers are the files the file store itself would
sweep (temp files of killed writers) or keeps (set-aside copies).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Final

from msal_persist._lock import DEFAULT_STALE_GRACE, CrossProcessLock
from msal_persist._persistence import MAX_SET_ASIDE, FilePersistence
from msal_persist._process import pid_is_running
from msal_persist._stale import lock_file_refusal

from ._base import Check, duration, plural, quote

__all__ = ["check_leftovers", "check_lock"]

_LONG_LOCK_SECONDS: Final = 60.0


def check_lock(lock: CrossProcessLock) -> Check:
    """Judge the cache's lock file: absent, refused by writers, held, or stale."""
    try:
        st = os.lstat(lock.path)
    except (FileNotFoundError, NotADirectoryError):
        return Check("OK", "lock", f"not held (no {lock.path.name})")
    except OSError as error:
        return Check("FAIL", "lock", f"{lock.path}: cannot inspect it: {error.strerror}")
    refused = _refused_lock_file(lock.path, st)
    if refused is not None:
        return refused
    return _judge_lock_holder(lock, time.time() - st.st_mtime)


def _refused_lock_file(lock_path: Path, st: os.stat_result) -> Check | None:
    """A FAIL for what writers refuse at once as a lock file, by the lock's own rule.

    Judged on ``lstat`` alone: nothing here opens or follows it.
    """
    kind = lock_file_refusal(st)
    if kind is None:
        return None
    quoted = quote(lock_path)
    if stat.S_ISDIR(st.st_mode):
        return Check(
            "FAIL",
            "lock",
            f"{lock_path} is a directory, so no writer can ever take the lock",
            f"rmdir {quoted}",
        )
    fix = f"rm {quoted}"
    if stat.S_ISLNK(st.st_mode):
        try:
            kind += f" (to {os.readlink(lock_path)})"
        except OSError:
            kind += " (to ?)"
        fix += " (this removes the link, not its target)"
    elif st.st_nlink > 1:
        kind = f"has {st.st_nlink} names (hard links)"
        fix += " (the other names stay)"
    verb = "" if kind.startswith("has ") else "is "
    return Check(
        "FAIL",
        "lock",
        f"{lock_path} {verb}{kind}, which no MSAL tool creates: writers refuse it, "
        "so no sign-in can be saved",
        fix,
    )


def _judge_lock_holder(lock: CrossProcessLock, age: float) -> Check:
    """Judge a lock file that is a regular file with one name, from the pid it records."""
    pid = lock.holder_pid()
    if pid is None:
        if age < DEFAULT_STALE_GRACE:
            return Check("OK", "lock", f"held for {duration(age)} by a process that left no pid")
        return Check(
            "WARN",
            "lock",
            f"{lock.path.name} names no process and is {duration(age)} old",
            "none needed: the next writer removes it if no process holds it",
        )
    if not pid_is_running(pid):
        return Check(
            "WARN",
            "lock",
            f"stale: left by process {pid}, which is no longer running",
            f"none needed: the next writer removes it within a second (or: rm {quote(lock.path)})",
        )
    if age > _LONG_LOCK_SECONDS:
        return Check(
            "WARN",
            "lock",
            f"held by running process {pid} for {duration(age)}: writers wait for it",
            f"see what process {pid} is doing (ps -p {pid}); stop it if it hangs",
        )
    return Check("OK", "lock", f"held by running process {pid} for {duration(age)}")


def check_leftovers(persistence: FilePersistence) -> Check:
    """Count the temp files of killed writers and the set-aside copies beside the cache."""
    path = persistence.path
    dead = persistence.stale_temp_files()
    copies = persistence.set_aside_copies()
    if not dead and not copies:
        if not path.parent.is_dir():
            return Check("OK", "leftovers", "none (no directory)")
        return Check("OK", "leftovers", "no temp files of crashed writers, no set-aside copies")
    found = []
    if dead:
        found.append(f"{plural(len(dead), 'temp file')} of crashed writers")
    if copies:
        found.append(
            f"{plural(len(copies), 'set-aside copy')} ({path.name}.corrupt-*; writers keep "
            f"at most {MAX_SET_ASIDE}, deleting the oldest)"
        )
    leftovers = " ".join(quote(leftover) for leftover in [*dead, *copies])
    return Check(
        "WARN",
        "leftovers",
        " and ".join(found) + ": they may hold tokens",
        f"delete them when you no longer need them: rm {leftovers}",
    )
