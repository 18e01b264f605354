"""Encrypted-cache workers (tests_encryption/): ``python -m workers.keys COMMAND ARGS...``.

Each prints one JSON line: what happened, or the error's type and message.
"""

from __future__ import annotations

import json
import time

from msal_persist import MsalPersistError, PersistedTokenCache
from msal_persist.testing import LocalAuthority
from workers import main, wait_for_barrier


def sign_in(cache: str, key_spec: str, username: str) -> None:
    """Sign ``username`` in on a cache encrypted with ``key_spec``; report or fail."""
    started = time.monotonic()
    try:
        persisted = PersistedTokenCache(cache, encryption=key_spec, lock_timeout=30)
        authority = LocalAuthority(username=username)
        app = authority.public_client(token_cache=persisted)
        authority.sign_in(app, username)
        report = {"accounts": len(app.get_accounts()), "key_id": persisted.codec.key_id}  # type: ignore[attr-defined]
    except MsalPersistError as error:
        report = {"error": type(error).__name__, "message": str(error)}
    report["seconds"] = time.monotonic() - started
    print(json.dumps(report))


def first_write(cache: str, key_spec: str, username: str, barrier: str, parties: str) -> None:
    """Wait for everyone, then sign in: many processes creating the key at once."""
    wait_for_barrier(barrier, parties)
    sign_in(cache, key_spec, username)


COMMANDS = {"sign_in": sign_in, "first_write": first_write}

if __name__ == "__main__":
    main(COMMANDS)
