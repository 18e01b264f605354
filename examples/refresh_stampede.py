"""Four processes find their shared access token expired at once: one token request."""

from __future__ import annotations

import multiprocessing
from typing import Any

from msal_persist import PersistedTokenCache, coordinate_refreshes
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

PROCESSES = 4


def worker(barrier: Any, outcomes: Any) -> None:
    authority = LocalAuthority()  # counts the requests that reach it from this process
    app = coordinate_refreshes(authority.public_client(token_cache=PersistedTokenCache()))
    account = app.get_accounts()[0]
    barrier.wait(timeout=60)
    result = app.acquire_token_silent(DEFAULT_SCOPES, account)
    outcomes.put(((result or {}).get("token_source"), authority.token_endpoint_hits))


if __name__ == "__main__":
    # Sign in with an access token msal already treats as expired (under 5 minutes left).
    first = LocalAuthority(access_token_lifetime=60)
    first.sign_in(first.public_client(token_cache=PersistedTokenCache()))

    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=worker, args=(barrier, outcomes)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    results = [outcomes.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    for index, (source, hits) in enumerate(results):
        print(f"process {index}: token from {source}, {hits} token request(s)")
    assert sum(hits for _, hits in results) == 1
