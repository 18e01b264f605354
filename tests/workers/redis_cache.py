"""Redis store workers: ``python -m workers.redis_cache COMMAND ARGS...`` (``tests_redis/``).

Each builds real msal applications on a ``PersistedTokenCache`` over a ``RedisStore`` with a
connection of its own, as a process on another machine would, against the local stand-in
authority, and prints one JSON line with what it observed.
"""

from __future__ import annotations

import json
import sys
import time

from msal_persist import PersistedTokenCache, RedisPartitions, RedisStore
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from workers import main, wait_for_barrier


def _store(url: str, key: str, username: str) -> RedisStore:
    # key "per-user:<prefix>": one partition per user under <prefix>; otherwise one key.
    if key.startswith("per-user:"):
        partitions = RedisPartitions(url, prefix=key.removeprefix("per-user:"))
        return partitions.for_user(LocalAuthority().home_account_id(username))
    return RedisStore(url, key)


def refresher(  # noqa: PLR0917 - the command line's arguments, in order
    url: str, key: str, username: str, rounds: str, barrier: str, parties: str
) -> None:
    """Sign ``username`` in, wait for everyone, force-refresh ``rounds`` times."""
    authority = LocalAuthority(username=username)
    store = _store(url, key, username)
    app = authority.public_client(token_cache=PersistedTokenCache(store=store))
    authority.sign_in(app, username)
    account = app.get_accounts(username=username)[0]
    wait_for_barrier(barrier, parties)
    last = None
    for _ in range(int(rounds)):
        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
        assert result and "refresh_token" in result, result
        last = result["refresh_token"]
    print(json.dumps({"username": username, "last_refresh_token": last}))


def refresh_once(url: str, key: str, username: str) -> None:
    """Force one refresh of ``username``'s tokens; print the new access token."""
    authority = LocalAuthority(username=username)
    app = authority.public_client(token_cache=PersistedTokenCache(store=RedisStore(url, key)))
    account = app.get_accounts(username=username)[0]
    result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
    print(json.dumps({"access_token": result["access_token"]}))


def hold_lock(url: str, key: str, lease: str) -> None:
    """Take the store's lock with a ``lease`` (seconds), announce it, and hang until killed."""
    store = RedisStore(url, key, lease=float(lease))
    store.acquire()
    print("ready", flush=True)
    sys.stdin.read()
    time.sleep(3600)


COMMANDS = {"refresher": refresher, "refresh_once": refresh_once, "hold_lock": hold_lock}

if __name__ == "__main__":
    main(COMMANDS)
