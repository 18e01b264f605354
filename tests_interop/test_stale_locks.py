"""Lock files left behind by a holder killed with SIGKILL, from either library."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from interop_helpers import Measure, kill_hard, peer_command, reports, run_peers

from msal_persist import CrossProcessLock, PersistedTokenCache
from msal_persist.testing import LocalAuthority
from process_helpers import running

HOLDERS = ["ext-filelock", "ext-portalocker", "persist"]
EXT_FLAVOURS = ["ext-filelock", "ext-portalocker"]
BOUND = 5.0  # msal-extensions' own lock timeout: a stale lock must cost less than that


def leave_stale_lock(kind: str, lockpath: Path) -> int:
    """Have a ``kind`` process take the lock on ``lockpath``, SIGKILL it; return its pid."""
    lockpath.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with running(peer_command("hold_lock", kind=kind, lockpath=str(lockpath))) as proc:
        kill_hard(proc)
    assert lockpath.read_text().split()[0] == str(proc.pid)
    return proc.pid


@pytest.mark.parametrize("holder", HOLDERS)
def test_msal_persist_breaks_a_lock_left_by_a_killed_holder(
    holder: str, cache_path: Path, measure: Measure
) -> None:
    """The next msal-persist write proceeds within a bounded delay and removes the lock file."""
    lockpath = cache_path.with_name(cache_path.name + ".lockfile")
    leave_stale_lock(holder, lockpath)
    authority = LocalAuthority()
    cache = PersistedTokenCache(cache_path)
    app = authority.public_client(token_cache=cache)

    started = time.monotonic()
    authority.sign_in(app, username="ada@example.test")
    delay = time.monotonic() - started

    measure(f"msal-persist sign-in after a SIGKILLed {holder} holder, s", delay)
    assert delay < BOUND
    assert cache.store.lock.broken == 1
    assert not lockpath.exists()
    assert [a["username"] for a in app.get_accounts()] == ["ada@example.test"]


def test_msal_extensions_recovers_once_msal_persist_touched_the_lock(
    tmp_path: Path, measure: Measure
) -> None:
    """A lock left by a killed msal-persist stalls msal-extensions until msal-persist breaks it."""
    # Without msal-persist: each flavour meets the stale lock file on its own (both at once,
    # on separate files, so the 5 s pass once).
    alone = {kind: tmp_path / "alone" / kind / "token_cache.json.lockfile" for kind in EXT_FLAVOURS}
    for lockpath in alone.values():
        leave_stale_lock("persist", lockpath)
    results = reports(
        run_peers([peer_command("lock_once", kind=k, lockpath=str(p)) for k, p in alone.items()])
    )
    for result in results:
        measure(
            f"{result['kind']} alone on a stale msal-persist lock",
            f"{result['elapsed']:.2f} s, error={result['error'] is not None}, "
            f"fallbacks={result['lock_fallbacks']}, lock file left={result['lockfile_left']}",
        )

    # With msal-persist: any msal-persist acquisition breaks the stale file, after which the
    # peers take the lock at once.
    touched = {
        kind: tmp_path / "touched" / kind / "token_cache.json.lockfile" for kind in EXT_FLAVOURS
    }
    for kind, lockpath in touched.items():
        leave_stale_lock("persist", lockpath)
        lock = CrossProcessLock(lockpath, timeout=BOUND)
        started = time.monotonic()
        with lock:
            pass
        measure(f"msal-persist breaking it ({kind} file), s", time.monotonic() - started)
        assert lock.broken == 1
    results = reports(
        run_peers([peer_command("lock_once", kind=k, lockpath=str(p)) for k, p in touched.items()])
    )
    for result in results:
        measure(f"{result['kind']} after msal-persist broke it, s", result["elapsed"])
        assert result["error"] is None
        assert result["elapsed"] < 1.0
        assert result["lock_fallbacks"] == 0
        assert not result["lockfile_left"]
