"""Every OS call of a token refresh fails in turn: clear errors, whole files, nothing lost.

A real msal application refreshes its token through the cache while one call that
msal-persist makes to the operating system (the n-th ``os.*`` call, or portalocker's lock)
fails with ENOSPC, EIO, EACCES or EINTR. Whatever the call, afterwards: the error (if any) is
the library's own, the file holds the old or the new document whole, no temp or lock file is
left, memory agrees with the file, and once the fault is gone the next refresh succeeds and
keeps every account.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import portalocker
import pytest

from msal_persist import MsalPersistError, PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

_OS_CALLS = (
    "chmod",
    "fchmod",
    "fstat",
    "fsync",
    "listdir",
    "lstat",
    "mkdir",
    "open",
    "pread",
    "read",
    "rename",
    "replace",
    "stat",
    "unlink",
    "utime",
    "write",
)
_ERRNOS = (errno.ENOSPC, errno.EIO, errno.EACCES, errno.EINTR)


class _Faults:
    """Counts the OS calls msal-persist makes and fails the ``target``-th with ``code``."""

    def __init__(self) -> None:
        self.target: int | None = None
        self.code = errno.EIO
        self.calls: list[str] = []

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("msal_persist"):
                self.calls.append(name)
                if len(self.calls) - 1 == self.target:
                    self.fail(name)
            return function(*args, **kwargs)

        return call

    def fail(self, name: str) -> None:
        error = OSError(self.code, os.strerror(self.code))
        if self.code == errno.EINTR:
            error = InterruptedError(self.code, os.strerror(self.code))
        if name == "portalocker.lock":
            raise portalocker.exceptions.LockException(error) from error
        raise error

    def arm(self, target: int | None, code: int = errno.EIO) -> None:
        self.target, self.code, self.calls = target, code, []


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Faults]:
    injector = _Faults()
    for name in _OS_CALLS:
        monkeypatch.setattr(os, name, injector.wrap(name, getattr(os, name)))
    monkeypatch.setattr(portalocker, "lock", injector.wrap("portalocker.lock", portalocker.lock))
    yield injector
    injector.arm(None)


def _leftovers(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".lockfile"))}


def _refresh(cache: PersistedTokenCache, authority: LocalAuthority) -> dict[str, Any]:
    app = authority.public_client(token_cache=cache)
    accounts = app.get_accounts()
    result: dict[str, Any] = app.acquire_token_silent(
        DEFAULT_SCOPES, accounts[0], force_refresh=True
    )
    return result


@pytest.mark.parametrize("code", _ERRNOS, ids=errno.errorcode.get)
def test_a_failing_os_call_anywhere_in_a_refresh_loses_nothing(
    cache_path: Path, faults: _Faults, code: int
) -> None:
    """Each OS call of a refresh failing in turn: own error, whole file, nothing lost."""
    authority = LocalAuthority()
    signer = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    authority.sign_in(signer, "ada@example.test")
    authority.sign_in(signer, "grace@example.test")
    faults.arm(None)
    _refresh(PersistedTokenCache(cache_path), authority)
    total = len(faults.calls)
    assert total > 15
    for target in range(total):
        before = cache_path.read_bytes()
        cache = PersistedTokenCache(cache_path, lock_timeout=5)
        faults.arm(target, code)
        try:
            result = _refresh(cache, authority)
        except MsalPersistError:
            failed = True
        else:
            failed = False
            assert "access_token" in result
        finally:
            failed_call = faults.calls[target] if target < len(faults.calls) else None
            faults.arm(None)
        where = f"{failed_call} (call {target}) failing with {errno.errorcode[code]}"
        after = cache_path.read_bytes()
        json.loads(after)  # whole, whatever failed
        if failed:
            assert after == before or failed_call in {"fstat", "utime"}, where
        leftovers = _leftovers(cache_path.parent)
        assert leftovers <= {"token_cache.json.lockfile"}, where
        if leftovers:
            # The release could not delete it, or could not tell it was still its own: the
            # stale rules break it (at once for this process, as the next refresh shows).
            assert failed_call in {"unlink", "lstat"}, where
        # Memory agrees with the file (a write left pending by the fault lands first).
        assert json.loads(cache.serialize()) == json.loads(cache_path.read_bytes()), where
        # The fault is gone: the next refresh works at once and keeps every account.
        assert "access_token" in _refresh(
            PersistedTokenCache(cache_path, lock_timeout=5), authority
        )
        assert _leftovers(cache_path.parent) == set(), where
        usernames = {a["username"] for a in json.loads(cache_path.read_bytes())["Account"].values()}
        assert usernames == {"ada@example.test", "grace@example.test"}, where
