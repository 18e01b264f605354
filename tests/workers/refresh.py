"""Refresh-stampede workers: ``python -m workers.refresh COMMAND [STORE] ARGS...``.

Each process builds a real msal application on a ``PersistedTokenCache`` whose access token
has just expired (the parent seeded it), waits on a start barrier with the others, and asks
for a token from ``threads`` threads at once through ``coordinate_refreshes``. It prints one
JSON line: its pid, how many requests reached its own ``LocalAuthority`` (the parent adds
them up across processes) and, per thread, where the token came from or the error.

``STORE`` is the cache file's path, or ``--redis URL --redis-key KEY [--lease SECONDS]``
for a ``RedisStore`` (``tests_redis/``): the same scenarios run on either store.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from msal_persist import PersistedTokenCache, coordinate_refreshes
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from workers import main, wait_for_barrier

APP_SCOPES = ["https://graph.microsoft.com/.default"]
"""What ``acquire_token_for_client`` asks for (the client credentials grant needs /.default)."""


def _hang_if_first(marker: str, form: dict[str, str]) -> None:
    # The first process to get here (across all workers) records its pid and hangs, as a
    # request to an authority that never answers; the parent then kills it.
    del form
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(3600)


CacheFactory = Callable[..., PersistedTokenCache]
"""Makes the worker's cache: ``PersistedTokenCache``'s keywords in, the cache out."""

_REDIS_OPTIONS = ("--redis", "--redis-key", "--lease")


def _store_then_rest(argv: tuple[str, ...]) -> tuple[CacheFactory, list[str]]:
    """Split ``[--redis URL --redis-key KEY [--lease S]] | PATH`` from the other arguments."""
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0] in _REDIS_OPTIONS:
        options[rest[0]] = rest[1]
        del rest[:2]
    if not options:
        path = rest.pop(0)
        return lambda **kwargs: PersistedTokenCache(path, **kwargs), rest
    # redis-py is an optional extra: the file store's sessions do not install it.
    from msal_persist import RedisStore  # noqa: PLC0415

    url, key = options["--redis"], options["--redis-key"]
    lease = float(options.get("--lease", "10"))
    return lambda **kwargs: PersistedTokenCache(
        store=RedisStore(url, key, lease=lease), **kwargs
    ), rest


def stampede(*argv: str) -> None:
    """``stampede STORE KIND THREADS BARRIER PARTIES [...]``: see :func:`_stampede`."""
    make_cache, rest = _store_then_rest(argv)
    _stampede(make_cache, *rest)


def _stampede(  # noqa: PLR0917 - argv, one argument per knob of the scenario
    make_cache: CacheFactory,
    kind: str,
    threads: str,
    barrier: str,
    parties: str,
    coordinate: str = "on",
    fault: str = "none",
    refresh_timeout: str = "30",
    failure_backoff: str = "2",
) -> None:
    """Ask for a token from ``threads`` threads at once; report source, token and hits.

    Args:
        make_cache: Makes the cache the parent seeded with an expired access token.
        kind: ``public`` or ``confidential`` (``acquire_token_silent_with_error`` for the
            signed-in account) or ``client`` (``acquire_token_for_client``).
        threads: Threads asking at once in this process, sharing one application.
        barrier: The start barrier's file.
        parties: How many threads in all processes wait on the barrier.
        coordinate: ``on`` or ``off`` (``PersistedTokenCache(coordinate_refresh=...)``).
        fault: ``none``; ``error`` (this process's first token request gets
            ``invalid_grant``); ``hang:<marker>`` (the first request of all processes
            records its pid in ``<marker>`` and never ends); or ``gather:<barrier>`` (each
            request waits on a second barrier until every caller has sent one: without
            coordination, then, every caller asks, however the scheduler runs them).
        refresh_timeout: ``PersistedTokenCache(refresh_timeout=...)``.
        failure_backoff: Seconds after a failed refresh during which a miss returns its
            error without asking (the coordinator's ``failure_backoff``).
    """
    authority = LocalAuthority()
    if fault == "error":
        authority.fail_token_requests("invalid_grant", "AADSTS70000: injected by the test.")
    elif fault.startswith("hang:"):
        marker = fault.removeprefix("hang:")
        authority.on_token_request = lambda form: _hang_if_first(marker, form)
    elif fault.startswith("gather:"):
        gathering = fault.removeprefix("gather:")
        authority.on_token_request = lambda _form: wait_for_barrier(gathering, parties)
    persisted = make_cache(
        coordinate_refresh=coordinate == "on", refresh_timeout=float(refresh_timeout)
    )
    persisted.refresh_coordinator.failure_backoff = float(failure_backoff)
    if kind == "public":
        app = authority.public_client(token_cache=persisted)
    else:
        app = authority.confidential_client(token_cache=persisted)
    coordinate_refreshes(app)
    account = app.get_accounts()[0] if kind != "client" else None
    results: list[dict[str, Any]] = []
    start = threading.Barrier(int(threads))

    def ask() -> None:
        try:
            start.wait(timeout=30)
            wait_for_barrier(barrier, parties)
            if kind == "client":
                result = app.acquire_token_for_client(APP_SCOPES)
            else:
                result = app.acquire_token_silent_with_error(DEFAULT_SCOPES, account)
            results.append(
                {
                    "token_source": (result or {}).get("token_source"),
                    "access_token": (result or {}).get("access_token"),
                    "error": (result or {}).get("error"),
                    "correlation_id": (result or {}).get("correlation_id"),
                }
            )
        except BaseException as error:  # reported to the parent through stdout
            results.append({"exception": repr(error)})

    workers = [threading.Thread(target=ask) for _ in range(int(threads))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "hits": authority.token_endpoint_hits,
                "results": results,
            }
        )
    )


def hold_lease(*argv: str) -> None:
    """``hold_lease STORE KEY``: hold the refresh lease ``KEY`` until stdin closes (or death)."""
    make_cache, (key,) = _store_then_rest(argv)
    lease = make_cache().store.refresh_lease(key)
    assert lease.acquire(0)
    print("ready", flush=True)
    sys.stdin.read()
    lease.release()


COMMANDS = {"hold_lease": hold_lease, "stampede": stampede}

if __name__ == "__main__":
    main(COMMANDS)
