"""``clear`` and ``remove``: the commands that change a cache, through the cache itself.

What to change is shown first, from a lock-free read that changes nothing; once confirmed,
the change is the library's: ``clear`` is :meth:`PersistedTokenCache.clear`, and ``remove``
is :meth:`PersistedTokenCache.remove_accounts` inside the cache's own transaction, which
reloads the newest content under the lock, sets aside what msal cannot use, writes strict
JSON once and releases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from msal_persist._errors import CacheFileError, LockTimeoutError
from msal_persist._file_store import FileStore
from msal_persist._persistence import FilePersistence
from msal_persist._schema import ACCOUNT_SECTIONS
from msal_persist._text import printable
from msal_persist._token_cache import PersistedTokenCache

from . import _redis
from ._base import (
    PROG,
    AddCommand,
    CommandError,
    ExitCode,
    add_change_options,
    add_path_argument,
    plural,
    resolve,
    say,
)
from ._inventory import ENTRY_NAMES, describe_accounts, matching_accounts, what_clear_deletes
from ._read import codec_from, inspect, read, read_document

__all__ = ["add_commands", "confirm"]


def add_commands(add: AddCommand) -> None:
    """Add ``clear`` and ``remove``."""
    clear = add(
        "clear",
        summary="delete every token (sign everyone out)",
        description="Delete the cache file under the cross-process lock.",
        handler=_cmd_clear,
    )
    add_path_argument(clear)
    _redis.add_redis_options(clear)
    add_change_options(clear)
    remove = add(
        "remove",
        summary="delete one account's tokens",
        description=(
            "Remove an account and all its tokens (every client id) in one write, under the "
            "cross-process lock. App metadata stays."
        ),
        handler=_cmd_remove,
    )
    remove.add_argument("account", metavar="ACCOUNT", help="username or home account id")
    add_path_argument(remove)
    _redis.add_redis_options(remove)
    add_change_options(remove)


def confirm(question: str, *, assume_yes: bool, path: Path) -> bool:
    """Ask ``question`` on the terminal; without one, refuse unless ``--yes`` was given."""
    if assume_yes:
        return True
    if sys.stdin is None or not sys.stdin.isatty():
        raise CommandError(
            ExitCode.USAGE, path, "stdin is not a terminal, so nobody can confirm: pass --yes"
        )
    sys.stderr.write(f"{printable(question)} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() in {"y", "yes"}:
        return True
    sys.stderr.write(f"{PROG}: nothing changed in {printable(path)}\n")
    return False


@contextlib.contextmanager
def _lock_errors(path: Path, store: FileStore) -> Iterator[None]:
    """Say, of a lock that could not be taken, that nothing changed (exit 5, or 4)."""
    try:
        yield
    except LockTimeoutError as error:
        holder = f"process {error.holder_pid}" if error.holder_pid else "another process"
        raise CommandError(
            ExitCode.LOCKED,
            path,
            f"{holder} held the lock ({store.lock.path.name}) for more than {error.timeout:g} s; "
            "nothing changed",
        ) from None
    except CacheFileError as error:
        if error.path != str(store.lock.path):
            raise  # about the cache file itself: reported as it is
        # A lock path writers refuse (a symlink, a FIFO, ...): said at once, never waited on.
        raise CommandError(
            ExitCode.UNREADABLE,
            error.path,
            f"cannot {error.operation}: {error.reason}; nothing changed",
        ) from None


def _cmd_clear(args: argparse.Namespace) -> int:
    if _redis.requested(args):
        return _redis.clear(args, confirm)
    path = resolve(args.path, args.app).path
    inspect(path)
    what = what_clear_deletes(lambda: read(path, codec_from(args.key)), "file")
    if not confirm(f"Delete {what} in {path}?", assume_yes=args.yes, path=path):
        return ExitCode.FAILED
    store = FileStore(path, lock_timeout=args.lock_timeout)
    with _lock_errors(path, store):
        existed = PersistedTokenCache(store=store).clear()
    if not existed:
        raise CommandError(ExitCode.NO_CACHE, path, "no such file: someone else removed it first")
    say(f"cleared {path}: deleted {what}")
    return ExitCode.OK


def _cmd_remove(args: argparse.Namespace) -> int:
    if _redis.requested(args):
        return _redis.remove(args, confirm)
    path = resolve(args.path, args.app).path
    codec = codec_from(args.key)
    state = read_document(path, codec).state
    matches = matching_accounts(state, args.account)
    if not matches:
        raise CommandError(
            ExitCode.NO_ACCOUNT, path, f"no account matches; `{PROG} show` lists them"
        )
    names = describe_accounts(state, matches)
    if not confirm(
        f"Remove {names} and all its tokens from {path}?", assume_yes=args.yes, path=path
    ):
        return ExitCode.FAILED
    store = FileStore(path, lock_timeout=args.lock_timeout)
    cache = PersistedTokenCache(store=store, codec=codec)
    copies = set(FilePersistence(path).set_aside_copies())
    with _lock_errors(path, store), cache.transaction():
        # Decide again on the newest content, as the cache reloaded it under the lock:
        # another process may have written since the question was asked.
        state = json.loads(cache.serialize())
        matches = matching_accounts(state, args.account)
        if not matches:
            raise CommandError(ExitCode.NO_ACCOUNT, path, "no account matches any more")
        names = describe_accounts(state, matches)
        removed = cache.remove_accounts(matches)
    # The cache kept a file with parts msal cannot use as a set-aside copy: say where.
    for copy in sorted(set(FilePersistence(path).set_aside_copies()) - copies):
        say(f"kept the original as {copy}")
    counts = ", ".join(plural(removed[s], ENTRY_NAMES[s]) for s in ACCOUNT_SECTIONS)
    say(f"removed {names} from {path}: {counts}")
    return ExitCode.OK
