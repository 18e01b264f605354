"""``doctor``: check the location, permissions, content and lock of a cache. Changes nothing.

Each check is one line, ``OK``, ``WARN`` or ``FAIL``, and a fix for what is wrong. The
judgements are the library's: the cache file is ``lstat``-ed once, read and decoded once
(through the lock-free read every read-only command uses), the lock file is judged as
writers would judge it, and leftovers are what the file store itself would sweep or keep.
"""

from __future__ import annotations

import argparse
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from msal_persist._codec import Codec
from msal_persist._envelope import is_envelope
from msal_persist._errors import CacheLocationError, DecryptionError, KeyUnavailableError
from msal_persist._file_store import FileStore
from msal_persist._locations import ENV_VAR, CacheLocation, default_cache_path
from msal_persist._persistence import FilePersistence
from msal_persist._settle import Reading

from . import _redis
from ._base import (
    PROG,
    AddCommand,
    Check,
    CommandError,
    ExitCode,
    add_path_argument,
    duration,
    plural,
    quote,
    say,
    size,
)
from ._beside import check_leftovers, check_lock
from ._inventory import inventory, left_out
from ._read import codec_from, describe_link, read, refuse_non_regular

__all__ = ["add_commands"]

_BIG_CACHE_BYTES: Final = 10 * 1024 * 1024
_CHOSEN_BECAUSE: Final = {
    "explicit": "given on the command line",
    "environment": f"from ${ENV_VAR}",
    "xdg-runtime-dir": "in $XDG_RUNTIME_DIR: a tmpfs, wiped when your last session ends",
}


def add_commands(add: AddCommand) -> None:
    """Add ``doctor``."""
    doctor = add(
        "doctor",
        summary="check location, permissions, content and lock",
        description="Check a cache and say how to fix what is wrong. Changes nothing.",
        handler=_cmd_doctor,
    )
    add_path_argument(doctor)
    _redis.add_redis_options(doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    redis = _redis.requested(args)
    checks = list(_redis.diagnose(args) if redis else _diagnose(args.path, args.app, args.key))
    for check in checks:
        say(*check.lines())
    counts = {status: sum(c.status == status for c in checks) for status in ("OK", "WARN", "FAIL")}
    say(
        f"doctor: {plural(len(checks), 'check')}: {counts['OK']} OK, "
        f"{plural(counts['WARN'], 'warning')}, {plural(counts['FAIL'], 'failure')}"
    )
    return ExitCode.FAILED if counts["FAIL"] else ExitCode.OK


def _diagnose(explicit: str | None, app: str, key: str | None) -> Iterator[Check]:
    try:
        location = default_cache_path(app, explicit=explicit)
    except CacheLocationError as error:
        yield Check(
            "FAIL",
            "location",
            f"{error.path}: {error.reason}",
            f"give the path of a file (or unset ${ENV_VAR} to use the default location)",
        )
        return
    path = location.path
    store = FileStore(path)
    yield _check_location(location)
    yield from _check_directory(path.parent)
    try:
        codec = codec_from(key)
    except KeyUnavailableError as error:
        codec = None
        yield Check("FAIL", "encryption key", f"{error.source}: {error.reason}")
    file_checks, reading = _check_file(path, codec, key)
    yield from file_checks
    if reading is not None:
        yield from _check_content(path, reading)
    yield check_lock(store.lock)
    yield check_leftovers(FilePersistence(path))


def _check_location(location: CacheLocation) -> Check:
    path = location.path
    if location.rule in _CHOSEN_BECAUSE:
        return Check("OK", "location", f"{path} ({_CHOSEN_BECAUSE[location.rule]})")
    unsafe = [r for r in location.reasons if r.startswith("XDG_RUNTIME_DIR=")]
    if unsafe:
        return Check(
            "WARN",
            "location",
            f"{path} (user cache directory, persists across reboots) because {unsafe[0]}",
            "make $XDG_RUNTIME_DIR a directory you own with mode 0700, or set "
            f"${ENV_VAR} to choose the file yourself",
        )
    return Check("OK", "location", f"{path} (user cache directory, persists across reboots)")


def _check_directory(directory: Path) -> Iterator[Check]:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        yield Check(
            "OK",
            "directory",
            f"{directory} does not exist yet; the first sign-in creates it with mode 0700",
        )
        return
    except OSError as error:
        yield Check("FAIL", "directory", f"{directory}: cannot inspect it: {error.strerror}")
        return
    if not stat.S_ISDIR(st.st_mode):
        yield Check(
            "FAIL",
            "directory",
            f"{directory} is not a directory",
            "choose a cache path inside a directory",
        )
        return
    if os.access(directory, os.W_OK | os.X_OK):
        yield Check("OK", "directory", f"{directory} exists and you can write in it")
    else:
        yield Check(
            "FAIL",
            "directory",
            f"{directory}: you cannot create files in it, so no token can be saved",
            f"chmod u+wx {quote(directory)}",
        )
    yield _check_mode("directory permissions", directory, st, 0o700)


def _check_mode(name: str, path: Path, st: os.stat_result, expected: int) -> Check:
    mode = stat.S_IMODE(st.st_mode)
    uid = os.geteuid()
    owner = "owned by you" if st.st_uid == uid else f"owned by uid {st.st_uid}, not you ({uid})"
    quoted = quote(path)
    is_dir = stat.S_ISDIR(st.st_mode)
    # Whoever may rename entries in the directory can put their own cache in place of
    # yours, and your applications would then use their account (the sticky bit stops it).
    hijack = "replace your token cache with one holding their own account"
    if is_dir and st.st_uid not in {uid, 0}:
        return Check(
            "FAIL",
            name,
            f"mode {mode:04o}, {owner}: its owner can {hijack}",
            f"use a cache path in a directory of your own, or: sudo chown {uid} {quoted}",
        )
    if is_dir and mode & 0o022 and not mode & stat.S_ISVTX:
        who = " and ".join(w for w, bits in (("group", 0o020), ("others", 0o002)) if mode & bits)
        return Check(
            "FAIL",
            name,
            f"mode {mode:04o}, {owner}: {who} can rename files in it, so other users can {hijack}",
            f"chmod {expected:o} {quoted}",
        )
    if is_dir and mode & stat.S_ISVTX and mode & stat.S_IWOTH:
        return Check(
            "WARN",
            name,
            f"mode {mode:04o}, {owner}: a shared directory where other users see the file names",
            f"keep the cache in a private directory (for example set ${ENV_VAR})",
        )
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
        what = "list and open entries in it" if is_dir else "access your tokens"
        return Check(
            "WARN",
            name,
            f"mode {mode:04o}, {owner}: {who} can {what}",
            f"chmod {expected:o} {quoted}",
        )
    if st.st_uid != uid:
        return Check(
            "WARN",
            name,
            f"mode {mode:04o}, {owner}: its owner can read and replace your tokens",
            f"use a cache path of your own, or: sudo chown {uid} {quoted}",
        )
    return Check("OK", name, f"mode {mode:04o}, {owner}")


def _check_file(
    path: Path, codec: Codec | None, key: str | None
) -> tuple[list[Check], Reading | None]:
    """Judge the cache file from one ``lstat``, then read it once (if it is a file)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        missing = Check(
            "WARN",
            "file",
            f"{path} does not exist: nothing is cached yet, or this is the wrong path",
            f"sign in with an application that uses this cache; `{PROG} path` shows the "
            "default location",
        )
        return [missing], None
    except OSError as error:
        return [Check("FAIL", "file", f"{path}: cannot inspect it: {error.strerror}")], None
    if stat.S_ISLNK(st.st_mode):
        # Never read through it: the library refuses links, so what lies behind is no cache.
        link = describe_link(path)
        detail = f"{path} (a symlink to {link.target}): {link.problem}"
        return [Check("FAIL", "file", detail, link.fix)], None
    sealed: Check | None = None
    try:
        refuse_non_regular(path, st)  # a FIFO or a device is never opened
        reading: Reading | None = read(path, codec)
    except CommandError as error:
        return [Check("FAIL", "file", f"{path}: {error.problem}", _file_fix(path, error))], None
    except (DecryptionError, KeyUnavailableError) as error:
        reading, sealed = None, _sealed(path, error, codec, key)
    age = duration(time.time() - st.st_mtime)
    if st.st_nlink > 1:
        found = Check(
            "WARN",
            "file",
            f"{path}: a regular file with {st.st_nlink} names (hard links), last written "
            f"{age} ago: each write replaces this name only, so the other names keep "
            "old tokens",
            f"find the other names (find / -samefile {quote(path)} 2>/dev/null) and "
            "delete those no application uses",
        )
    else:
        found = Check("OK", "file", f"{path}: a regular file, last written {age} ago")
    if not st.st_mode & stat.S_IWUSR:
        mode = Check(
            "FAIL",
            "file permissions",
            f"mode {stat.S_IMODE(st.st_mode):04o}: read-only, so writers refuse to "
            "replace it and new sign-ins are not saved",
            f"chmod 600 {quote(path)}",
        )
    else:
        mode = _check_mode("file permissions", path, st, 0o600)
    if sealed is None and reading is not None:
        sealed = _check_encryption(reading, codec)
    return [found, mode, *([sealed] if sealed else [])], reading


def _sealed(
    path: Path, error: DecryptionError | KeyUnavailableError, codec: Codec | None, key: str | None
) -> Check:
    """Explain an encrypted cache this run could not open: which key, where it looked."""
    give = f"{PROG} doctor {quote(path)} --key keyring|keyring:NAME|env:VARIABLE|file:PATH"
    if isinstance(error, KeyUnavailableError):
        return Check("FAIL", "encryption", f"{error.source}: {error.reason}")
    lost = f"if that key is lost, so are the tokens: {PROG} clear {quote(path)}, then sign in"
    if codec is None:
        why = "no --key was given" if key is None else f"the key from {key} cannot be had"
        return Check(
            "FAIL",
            "encryption",
            f"encrypted (AES-256-GCM) with key {error.key_id}; {why}",
            f"give the key the applications use: {give}",
        )
    return Check(
        "FAIL",
        "encryption",
        f"cannot decrypt: {error.reason}",
        f"give the key the applications use ({give}); {lost}",
    )


def _check_encryption(reading: Reading, codec: Codec | None) -> Check | None:
    data = reading.snapshot.data or b""
    key_id = getattr(codec, "key_id", None)
    if is_envelope(data):
        where = getattr(getattr(codec, "source", None), "description", "")
        return Check("OK", "encryption", f"AES-256-GCM, key {key_id} from {where}")
    if codec is not None:
        return Check(
            "WARN",
            "encryption",
            "not encrypted yet: the tokens are in plaintext until an application that "
            "encrypts writes the cache",
            f"to encrypt it now: {PROG} rotate-key --to keyring (or env:VARIABLE, file:PATH)",
        )
    return None


def _file_fix(path: Path, error: CommandError) -> str:
    quoted = quote(path)
    if error.code == ExitCode.UNREADABLE:
        return f"make it readable by you: chmod 600 {quoted}"
    return f"move it away (mv {quoted} {quoted}.old) or choose another cache path"


def _check_content(path: Path, reading: Reading) -> Iterator[Check]:
    decoded = reading.decoded
    if decoded is None:
        yield Check(
            "FAIL",
            "content",
            f"not an msal token cache: {reading.problem}",
            f"the next msal-persist writer sets it aside as {path.name}.corrupt-<time>; "
            f"to start over now: {PROG} clear {quote(path)}",
        )
        return
    state = decoded.state
    contents = inventory(state, time.time())
    detail = contents.describe()
    if contents.expired_count:
        detail += f" ({contents.expired_count} expired, dropped on next use)"
    if contents.other_sections:
        detail += "; also keeps sections of other tools: " + ", ".join(
            sorted(contents.other_sections)
        )
    if decoded.rejected:
        # Not a FAIL: msal-persist hands msal the usable entries, and keeps the original.
        yield Check(
            "WARN",
            "content",
            f"{left_out(decoded)}; the next msal-persist write sets the original file aside "
            f"as {path.name}.corrupt-<time> and keeps the usable entries: {detail}",
        )
    else:
        yield Check("OK", "content", f"a valid msal token cache: {detail}")
    data = reading.snapshot.data or b""
    entries = sum(len(v) for v in state.values() if isinstance(v, dict))
    found = f"{size(len(data))}, {plural(entries, 'entry')}"
    if len(data) > _BIG_CACHE_BYTES:
        yield Check(
            "WARN",
            "size",
            f"{found}: every write rewrites the whole file",
            f"remove accounts you no longer use: {PROG} remove ACCOUNT",
        )
    else:
        yield Check("OK", "size", found)
