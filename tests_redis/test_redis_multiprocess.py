"""Many processes, each with its own connection, refreshing on one key or per-user keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from msal_persist import RedisPartitions
from msal_persist.testing import LocalAuthority
from process_helpers import run_workers, worker

ROUNDS = 20


def _refresh_tokens(document: bytes) -> dict[str, set[str]]:
    tokens: dict[str, set[str]] = {}
    for entry in json.loads(document)["RefreshToken"].values():
        tokens.setdefault(entry["home_account_id"], set()).add(entry["secret"])
    return tokens


@pytest.mark.parametrize("processes", [8, 32])
@pytest.mark.parametrize("layout", ["one-key", "per-user"])
def test_processes_refreshing_lose_nothing(
    tmp_path: Path, url: str, admin: redis.Redis, processes: int, layout: str
) -> None:
    """P processes x 20 forced refreshes: zero errors, every user's last refresh token kept."""
    key = "shared" if layout == "one-key" else "per-user:web:"
    barrier = tmp_path / "barrier"
    commands = [
        worker(
            "redis_cache",
            "refresher",
            url,
            key,
            f"user{i}@example.test",
            str(ROUNDS),
            str(barrier),
            str(processes),
        )
        for i in range(processes)
    ]
    reports = [json.loads(out) for out in run_workers(commands, timeout=150)]
    authority = LocalAuthority()
    if layout == "one-key":
        final = _refresh_tokens(admin.get("shared"))
        assert len(json.loads(admin.get("shared"))["Account"]) == processes
    else:
        partitions = RedisPartitions(url, prefix="web:")
        final = {}
        for report in reports:
            home = authority.home_account_id(report["username"])
            final.update(_refresh_tokens(admin.get(partitions.key(home))))
    assert len(final) == processes
    for report in reports:
        home = authority.home_account_id(report["username"])
        assert final[home] == {report["last_refresh_token"]}
    assert not [k for k in admin.keys("*") if k.endswith(b":lock")]  # every lock given back
