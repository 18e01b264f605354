"""Cache workers: ``python -m workers.cache COMMAND ARGS...``.

Each command builds real msal applications on a ``PersistedTokenCache`` against the local
stand-in authority, and prints one JSON line with what it observed.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from msal_persist import PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from workers import main, wait_for_barrier

ENCRYPTION_VAR = "MSAL_PERSIST_TEST_ENCRYPTION"


def open_cache(path: str) -> PersistedTokenCache:
    """The cache every command uses, encrypted when the environment says so.

    ``$MSAL_PERSIST_TEST_ENCRYPTION`` may name a key source (``env:VARIABLE``,
    ``keyring``...): tests_encryption/ reruns these same workers on an encrypted cache.
    """
    return PersistedTokenCache(path, encryption=os.environ.get(ENCRYPTION_VAR) or None)


def refresher(cache: str, username: str, rounds: str, barrier: str, parties: str) -> None:
    """Sign ``username`` in, wait for everyone, force-refresh ``rounds`` times."""
    authority = LocalAuthority(username=username)
    app = authority.public_client(token_cache=open_cache(cache))
    authority.sign_in(app, username)
    account = app.get_accounts(username=username)[0]
    wait_for_barrier(barrier, parties)
    last = None
    for _ in range(int(rounds)):
        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
        assert result and "refresh_token" in result, result
        last = result["refresh_token"]
    print(json.dumps({"username": username, "last_refresh_token": last}))


def threaded_refresher(cache: str, prefix: str, threads: str, rounds: str) -> None:
    """Several threads share one cache instance, each signing in and refreshing its own user."""
    shared = open_cache(cache)
    start = threading.Barrier(int(threads))
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            username = f"{prefix}{index}@example.test"
            authority = LocalAuthority(username=username)
            app = authority.public_client(token_cache=shared)
            authority.sign_in(app, username)
            account = app.get_accounts(username=username)[0]
            start.wait(timeout=30)
            for _ in range(int(rounds)):
                result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
                results[username] = result["refresh_token"]
        except BaseException as error:  # reported to the parent through stdout
            errors.append(error)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(int(threads))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    print(json.dumps(results))


def silent(cache: str, username: str) -> None:
    """Get a token silently for ``username``; report where it came from and endpoint hits."""
    authority = LocalAuthority(username=username)
    app = authority.public_client(token_cache=open_cache(cache))
    accounts = app.get_accounts(username=username)
    result = app.acquire_token_silent(DEFAULT_SCOPES, accounts[0]) if accounts else None
    print(
        json.dumps(
            {
                "accounts": len(accounts),
                "token_source": (result or {}).get("token_source"),
                "token_endpoint_hits": authority.token_endpoint_hits,
                "saves": app.token_cache.store.saves,
            }
        )
    )


def client_credentials(cache: str) -> None:
    """Acquire an app token with the client credentials grant; report endpoint hits."""
    authority = LocalAuthority()
    app = authority.confidential_client(token_cache=open_cache(cache))
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    assert "access_token" in result, result
    print(
        json.dumps(
            {
                "token_source": result.get("token_source"),
                "token_endpoint_hits": authority.token_endpoint_hits,
                "access_token": result["access_token"],
            }
        )
    )


def crash_writer(cache: str, prefix: str) -> None:
    """Sign users in one after another forever, announcing each completed write."""
    authority = LocalAuthority()
    app = authority.public_client(token_cache=open_cache(cache))
    print("ready", flush=True)
    index = 0
    while True:
        username = f"{prefix}{index}@example.test"
        authority.sign_in(app, username)
        print(username, flush=True)
        index += 1


def hold_lock(cache: str) -> None:
    """Hold the cache's lock until stdin closes (or we are killed)."""
    lock = open_cache(cache).store.lock
    lock.acquire()
    print("ready", flush=True)
    sys.stdin.read()
    lock.release()


def flush_at_exit_after_contention(cache: str) -> None:
    """Leave a token for the exit flush after the lock was contended once (see test_hostile)."""
    persisted = open_cache(cache)
    authority = LocalAuthority()
    app = authority.public_client(token_cache=persisted)
    authority.sign_in(app)
    # Contend for the lock once, so that the lock's inotify watch exists before exit.
    holder = open_cache(cache).store.lock
    holder.acquire()
    threading.Timer(0.2, holder.release).start()
    with persisted.transaction():
        pass
    account = app.get_accounts()[0]
    # A refresh answered without a new refresh token: msal's add() is queued for update_rt(),
    # which never comes; only the exit flush can write it.
    persisted.add(
        {
            "client_id": "c",
            "scope": ["User.Read"],
            "token_endpoint": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "grant_type": "refresh_token",
            "environment": account["environment"],
            "response": {"access_token": "fresh-at-exit", "expires_in": 3600},
            "data": {},
        }
    )


COMMANDS = {
    "flush_at_exit_after_contention": flush_at_exit_after_contention,
    "refresher": refresher,
    "threaded_refresher": threaded_refresher,
    "silent": silent,
    "client_credentials": client_credentials,
    "crash_writer": crash_writer,
    "hold_lock": hold_lock,
}

if __name__ == "__main__":
    main(COMMANDS)
