"""kill -9 at random instants during writes: the file is always whole and up to date."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from msal_persist import PersistedTokenCache
from msal_persist.testing import LocalAuthority
from process_helpers import start, stop, worker

KILLS = 30


def test_sigkill_during_writes_never_leaves_a_broken_file(cache_path: Path) -> None:
    """30 writers killed at random instants: the file parses and holds the last completed write."""
    rng = random.Random(20261130)  # noqa: S311 - reproducible instants, not secrecy
    completed: list[str] = []
    for kill in range(KILLS):
        proc = start(worker("cache", "crash_writer", str(cache_path), f"k{kill}-"), stderr=False)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            completed.extend(line.strip() for line in proc.stdout if line.strip())
        finally:
            stop(proc)
        if cache_path.exists():
            document = json.loads(cache_path.read_bytes())  # must parse, every time
            on_disk = {entry["username"] for entry in document["Account"].values()}
            # Every write the writer reported complete is there; at most one more may be
            # (it landed between os.replace and the print).
            assert set(completed) <= on_disk
            assert len(on_disk - set(completed)) <= 1
            completed = sorted(on_disk)
    assert completed, "no writer got as far as one write in 30 runs"

    # The next process is not delayed by whatever the killed writers left behind.
    cache = PersistedTokenCache(cache_path, lock_timeout=10)
    authority = LocalAuthority()
    app = authority.public_client(token_cache=cache)
    started = time.monotonic()
    authority.sign_in(app, "after@example.test")
    assert time.monotonic() - started < 5  # a bound for the test, not a benchmark
    leftovers = {p.name for p in cache_path.parent.iterdir()} - {"token_cache.json"}
    assert leftovers == set(), "stale temp or lock files were left behind"
