"""Many real processes (and threads) sharing one cache file: nothing lost, nothing broken."""

from __future__ import annotations

import json
from pathlib import Path

from msal_persist.testing import LocalAuthority
from process_helpers import run_workers, worker

PROCESSES = 16
ROUNDS = 20


def _final_refresh_tokens(cache_path: Path) -> dict[str, set[str]]:
    document = json.loads(cache_path.read_text())
    tokens: dict[str, set[str]] = {}
    for entry in document["RefreshToken"].values():
        tokens.setdefault(entry["home_account_id"], set()).add(entry["secret"])
    return tokens


def test_sixteen_processes_refreshing_lose_nothing(tmp_path: Path, cache_path: Path) -> None:
    """16 processes x 20 forced refreshes: all 16 accounts, each with its last refresh token."""
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
    final = _final_refresh_tokens(cache_path)
    assert len(final) == PROCESSES
    authority = LocalAuthority()
    for report in reports:
        assert final[authority.home_account_id(report["username"])] == {
            report["last_refresh_token"]
        }
    document = json.loads(cache_path.read_text())
    assert len(document["Account"]) == PROCESSES
    assert not Path(f"{cache_path}.lockfile").exists()
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["token_cache.json"]


def test_threads_sharing_one_instance_lose_nothing(cache_path: Path) -> None:
    """4 threads sharing one cache instance, in each of 2 processes, keep every last token."""
    commands = [
        worker("cache", "threaded_refresher", str(cache_path), f"p{p}t", "4", str(ROUNDS))
        for p in range(2)
    ]
    results: dict[str, str] = {}
    for output in run_workers(commands):
        results.update(json.loads(output))
    assert len(results) == 8
    final = _final_refresh_tokens(cache_path)
    authority = LocalAuthority()
    for username, last in results.items():
        assert final[authority.home_account_id(username)] == {last}
