"""``show``, ``doctor``, ``clear`` and ``remove`` on a cache kept in Redis.

``--redis URL --redis-key KEY`` names a :class:`~msal_persist.RedisStore` instead of a file.
The rules are the library's, as for a file: ``show`` and ``doctor`` read without the lock
(:func:`~msal_persist._settle.read_settled`) and change nothing; ``clear`` and ``remove`` go
through the cache's own transaction, under the store's lock, in one fenced write.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from msal_persist._codec import Codec, Decoded
from msal_persist._errors import DecryptionError, KeyUnavailableError
from msal_persist._schema import ACCOUNT_SECTIONS
from msal_persist._settle import Reading, read_settled
from msal_persist._token_cache import PersistedTokenCache

from ._base import PROG, Check, CommandError, ExitCode, duration, plural, say, size
from ._inventory import (
    ENTRY_NAMES,
    describe_accounts,
    inventory,
    left_out,
    matching_accounts,
    what_clear_deletes,
)
from ._read import codec_from

if TYPE_CHECKING:
    from msal_persist._redis_store import RedisStore

__all__ = ["add_redis_options", "clear", "diagnose", "open_store", "read", "remove", "requested"]

Confirm = Callable[..., bool]
_MIN_TRACKING_VERSION = 6


def add_redis_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--redis URL`` and ``--redis-key KEY``: a cache in Redis instead of a file."""
    group = parser.add_argument_group("a cache in Redis (needs msal-persist[redis])")
    group.add_argument(
        "--redis", metavar="URL", help="the server: redis://, rediss:// or unix:// URL"
    )
    group.add_argument("--redis-key", metavar="KEY", help="the key holding the cache")


def requested(args: argparse.Namespace) -> bool:
    """Whether the command is about a Redis cache (and its options make sense together)."""
    url, key = getattr(args, "redis", None), getattr(args, "redis_key", None)
    if url is None and key is None:
        return False
    if url is None or key is None:
        raise CommandError(ExitCode.USAGE, PROG, "--redis and --redis-key go together")
    if getattr(args, "path", None) is not None:
        raise CommandError(ExitCode.USAGE, PROG, "give a PATH or --redis, not both")
    return True


def open_store(args: argparse.Namespace, *, lock_timeout: float | None = 0) -> RedisStore:
    """The store ``--redis`` and ``--redis-key`` name (reads make a round trip each)."""
    try:
        from msal_persist._redis_store import RedisStore  # noqa: PLC0415 - optional extra
    except ImportError:
        raise CommandError(
            ExitCode.USAGE,
            PROG,
            "a cache in Redis needs redis-py: pip install 'msal-persist[redis]'",
        ) from None
    try:
        store = RedisStore(args.redis, args.redis_key, local_copy=False, lock_timeout=lock_timeout)
    except ValueError as error:
        raise CommandError(ExitCode.USAGE, PROG, f"--redis: {error}") from None
    return store


def read(args: argparse.Namespace) -> tuple[str, Decoded]:
    """Read the cache without the lock: where it is and what it holds (else exit 3)."""
    store = open_store(args)
    reading = _reading(store, codec_from(args.key))
    if reading.decoded is None:
        raise CommandError(ExitCode.NO_CACHE, store.display_name, _no_document(reading))
    return store.display_name, reading.decoded


def _reading(store: RedisStore, codec: Codec | None) -> Reading:
    reading = read_settled(store, codec)
    if reading.snapshot.data is None:
        raise CommandError(ExitCode.NO_CACHE, store.display_name, "no such key: nothing cached")
    return reading


def _no_document(reading: Reading) -> str:
    return f"not an msal token cache: {reading.problem}"


def clear(args: argparse.Namespace, confirm: Confirm) -> int:
    """``clear``: delete the key under the store's lock, after showing what goes."""
    store = open_store(args, lock_timeout=args.lock_timeout)
    name = store.display_name
    what = what_clear_deletes(lambda: _reading(store, codec_from(args.key)), "key")
    if not confirm(f"Delete {what} in {name}?", assume_yes=args.yes, path=name):
        return ExitCode.FAILED
    if not PersistedTokenCache(store=store).clear():
        raise CommandError(ExitCode.NO_CACHE, name, "no such key: someone else removed it first")
    say(f"cleared {name}: deleted {what}")
    return ExitCode.OK


def remove(args: argparse.Namespace, confirm: Confirm) -> int:
    """``remove``: one account's entries, decided again under the lock, in one write."""
    store = open_store(args, lock_timeout=args.lock_timeout)
    name = store.display_name
    codec = codec_from(args.key)
    reading = _reading(store, codec)
    if reading.decoded is None:
        raise CommandError(ExitCode.NO_CACHE, name, _no_document(reading))
    state = reading.decoded.state
    matches = matching_accounts(state, args.account)
    if not matches:
        raise CommandError(
            ExitCode.NO_ACCOUNT, name, f"no account matches; `{PROG} show` lists them"
        )
    names = describe_accounts(state, matches)
    if not confirm(
        f"Remove {names} and all its tokens from {name}?", assume_yes=args.yes, path=name
    ):
        return ExitCode.FAILED
    cache = PersistedTokenCache(store=store, codec=codec)
    with cache.transaction():
        state = json.loads(cache.serialize())
        matches = matching_accounts(state, args.account)
        if not matches:
            raise CommandError(ExitCode.NO_ACCOUNT, name, "no account matches any more")
        names = describe_accounts(state, matches)
        removed = cache.remove_accounts(matches)
    counts = ", ".join(plural(removed[s], ENTRY_NAMES[s]) for s in ACCOUNT_SECTIONS)
    say(f"removed {names} from {name}: {counts}")
    return ExitCode.OK


def diagnose(args: argparse.Namespace) -> Iterator[Check]:
    """``doctor``: the server, the key, its content, expiry, lock and set-aside copies."""
    store = open_store(args)
    name = store.display_name
    client = store.client
    try:
        server = client.info("server")
        persistence = client.info("persistence")
    except Exception as error:  # noqa: BLE001 - redis-py's errors, said in words
        yield Check(
            "FAIL",
            "server",
            f"{name}: cannot reach it ({type(error).__name__}: {error})",
            "start redis-server, or check the URL, password and TLS options",
        )
        return
    version = str(server.get("redis_version", "?"))
    first = version.partition(".")[0]
    major = int(first) if first.isdigit() else 0
    if major and major < _MIN_TRACKING_VERSION:
        yield Check(
            "WARN",
            "server",
            f"Redis {version}: no client tracking, so every cache hit makes a round trip",
            "use Redis 6 or newer",
        )
    else:
        yield Check("OK", "server", f"Redis {version} at {name.partition(' key ')[0]}")
    try:
        reply: dict[Any, Any] = dict(client.config_get("save"))
        snapshots = bool(reply.get("save", reply.get(b"save", "unknown")))
    except Exception:  # noqa: BLE001 - CONFIG may be refused to this ACL user: assume yes
        snapshots = True
    if not persistence.get("aof_enabled") and not snapshots:
        yield Check(
            "WARN",
            "persistence",
            "neither AOF nor RDB snapshots: a server restart signs everyone out",
            "enable appendonly (or accept that tokens live in memory only)",
        )
    else:
        aof = "AOF on" if persistence.get("aof_enabled") else "RDB snapshots only"
        yield Check("OK", "persistence", aof)
    yield from _check_key(store, args.key)


def _check_key(store: RedisStore, key: str | None) -> Iterator[Check]:
    name = store.display_name
    kind = store.client.type(store.key)
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "none":
        yield Check(
            "WARN",
            "key",
            f"{name} does not exist: nothing is cached yet, or this is the wrong key",
            "sign in with an application that uses this key",
        )
    elif kind != "string":
        yield Check("FAIL", "key", f"{name} holds a Redis {kind}, not a token cache")
    else:
        try:
            reading = read_settled(store, codec_from(key))
        except (DecryptionError, KeyUnavailableError) as error:
            fix = "give the key the applications use: --key keyring|env:VARIABLE|file:PATH"
            yield Check("FAIL", "encryption", str(error), fix)
        else:
            yield from _check_content(reading)
        ttl = store.client.pttl(store.key)
        if isinstance(ttl, int) and ttl >= 0:
            yield Check("OK", "expiry", f"expires in {duration(ttl / 1000)} (renewed by writes)")
        else:
            yield Check("OK", "expiry", "never expires")
    holder = store.lock_holder()
    if holder is None:
        yield Check("OK", "lock", "not held")
    else:
        who, left = holder
        yield Check(
            "WARN",
            "lock",
            f"held by {who or 'an unknown writer'}, lease ends in {duration(left)}",
            "nothing to do: a dead holder's lease expires by itself",
        )
    copies = store.set_aside_copies()
    if copies:
        yield Check(
            "WARN",
            "bad content kept",
            f"{plural(len(copies), 'copy')} of bad content kept in its :corrupt hash",
            "look at them with redis-cli HGETALL, then delete that hash",
        )
    else:
        yield Check("OK", "bad content kept", "none")


def _check_content(reading: Reading) -> Iterator[Check]:
    decoded = reading.decoded
    data = reading.snapshot.data or b""
    if decoded is None:
        yield Check(
            "FAIL",
            "content",
            f"not an msal token cache: {reading.problem}",
            f"the next writer sets it aside; to start over now: {PROG} clear --redis ...",
        )
        return
    contents = inventory(decoded.state, time.time())
    if decoded.rejected:
        yield Check("WARN", "content", f"{left_out(decoded)}: {contents.describe()}")
    else:
        yield Check("OK", "content", f"a valid msal token cache: {contents.describe()}")
    yield Check("OK", "size", size(len(data)))
