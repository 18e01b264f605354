"""The invariants hold encrypted: many writers lose nothing; kill -9 never leaves a bad file.

The workers are tests/workers/cache.py's, told by ``$MSAL_PERSIST_TEST_ENCRYPTION`` (the
``key_in_env`` fixture) to encrypt with the key in ``$MSAL_PERSIST_KEY``.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

from msal_persist import EncryptedCodec, PersistedTokenCache
from msal_persist._envelope import MAGIC
from msal_persist.testing import LocalAuthority
from process_helpers import run_workers, start, stop, worker

PROCESSES = 16
ROUNDS = 20
KILLS = 30


def _decrypt(path: Path, key: bytes) -> dict[str, Any]:
    data = path.read_bytes()
    assert data.startswith(MAGIC), "the file is not encrypted"
    decoded = EncryptedCodec(key).decode(data)
    assert not decoded.rejected
    return decoded.state


def test_sixteen_processes_refreshing_encrypted_lose_nothing(
    tmp_path: Path, cache_path: Path, key_in_env: bytes
) -> None:
    """16 processes x 20 forced refreshes: every account keeps its last refresh token."""
    barrier = tmp_path / "barrier"
    commands = [
        worker(
            "cache",
            "refresher",
            str(cache_path),
            f"user{i}@example.test",
            str(ROUNDS),
            str(barrier),
            str(PROCESSES),
        )
        for i in range(PROCESSES)
    ]
    reports = [json.loads(out) for out in run_workers(commands, timeout=110)]
    state = _decrypt(cache_path, key_in_env)
    final: dict[str, set[str]] = {}
    for entry in state["RefreshToken"].values():
        final.setdefault(entry["home_account_id"], set()).add(entry["secret"])
    authority = LocalAuthority()
    assert len(final) == PROCESSES
    for report in reports:
        home_id = authority.home_account_id(report["username"])
        assert final[home_id] == {report["last_refresh_token"]}
    assert len(state["Account"]) == PROCESSES
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["token_cache.json"]


def test_sigkill_during_encrypted_writes_leaves_the_last_completed_write(
    cache_path: Path, key_in_env: bytes
) -> None:
    """30 writers killed at random instants: 30 of 30 files decrypt to the last completed write."""
    rng = random.Random(20261202)  # noqa: S311 - reproducible instants, not secrecy
    completed: list[str] = []
    decrypted = 0
    for kill in range(KILLS):
        proc = start(worker("cache", "crash_writer", str(cache_path), f"k{kill}-"), stderr=False)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            if not cache_path.exists():
                # The first writer completes one write before it may die: from then on
                # every one of the 30 kills leaves a file to decrypt, however slow the host.
                completed.append(proc.stdout.readline().strip())
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            completed.extend(line.strip() for line in proc.stdout if line.strip())
        finally:
            stop(proc)
        if cache_path.exists():
            on_disk = {e["username"] for e in _decrypt(cache_path, key_in_env)["Account"].values()}
            decrypted += 1
            assert set(completed) <= on_disk
            assert len(on_disk - set(completed)) <= 1  # landed between rename and print
            completed = sorted(on_disk)
    assert decrypted == KILLS

    cache = PersistedTokenCache(cache_path, encryption=key_in_env, lock_timeout=10)
    authority = LocalAuthority()
    authority.sign_in(authority.public_client(token_cache=cache), "after@example.test")
    leftovers = {p.name for p in cache_path.parent.iterdir()} - {"token_cache.json"}
    assert leftovers == set(), "stale temp or lock files were left behind"


def test_one_write_per_acquisition_in_other_processes(cache_path: Path, key_in_env: bytes) -> None:
    """A process whose token is cached gets it from the cache and writes nothing."""
    cache = PersistedTokenCache(cache_path, encryption=key_in_env)
    authority = LocalAuthority(username="ada@example.test")
    authority.sign_in(authority.public_client(token_cache=cache), "ada@example.test")
    (out,) = run_workers([worker("cache", "silent", str(cache_path), "ada@example.test")])
    report = json.loads(out)
    assert report == {
        "accounts": 1,
        "token_source": "cache",
        "token_endpoint_hits": 0,
        "saves": 0,
    }
