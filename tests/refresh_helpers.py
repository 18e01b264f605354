"""Refresh-stampede scenarios for any store: seed, start the workers, read their reports.

``tests/test_refresh_coordination.py`` runs them on the file store and
``tests_redis/test_redis_refresh.py`` on the Redis store; the workers are
``tests/workers/refresh.py``, told which store by their ``STORE`` arguments (a path, or
``--redis URL --redis-key KEY [--lease S]``).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from msal_persist import PersistedTokenCache
from msal_persist.testing import LocalAuthority
from process_helpers import Outcome, worker

APP_SCOPES = ["https://graph.microsoft.com/.default"]
EXPIRED = 60
"""An access token lifetime msal treats as expired at once (it wants 5 minutes left)."""


def seed(cache: PersistedTokenCache, kind: str) -> None:
    """Leave an access token that has just expired (and, for users, a refresh token)."""
    authority = LocalAuthority(access_token_lifetime=EXPIRED)
    if kind == "public":
        authority.sign_in(authority.public_client(token_cache=cache))
    elif kind == "confidential":
        authority.sign_in(authority.confidential_client(token_cache=cache))
    else:
        result = authority.confidential_client(token_cache=cache).acquire_token_for_client(
            APP_SCOPES
        )
        assert "access_token" in result, result


def stampede_commands(
    store: list[str],
    tmp_path: Path,
    kind: str,
    processes: int,
    *,
    threads: int = 1,
    coordinate: str = "on",
    fault: str = "none",
    refresh_timeout: float = 30,
    failure_backoff: float = 2,
) -> list[list[str]]:
    """``processes`` stampede workers on ``store`` (their ``STORE`` arguments)."""
    barrier = tmp_path / "barrier"
    return [
        worker(
            "refresh",
            "stampede",
            *store,
            kind,
            str(threads),
            str(barrier),
            str(processes * threads),
            coordinate,
            fault,
            str(refresh_timeout),
            str(failure_backoff),
        )
        for _ in range(processes)
    ]


def worker_reports(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Every worker's report; fails if any exited with an error."""
    failures = [outcome.describe() for outcome in outcomes if not outcome.ok]
    assert not failures, "\n".join(failures)
    return [json.loads(outcome.stdout) for outcome in outcomes]


def caller_results(reported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every thread's result; fails if any raised."""
    found = [result for report in reported for result in report["results"]]
    assert not [r for r in found if "exception" in r], found
    return found


def assert_one_refresh(reported: list[dict[str, Any]], callers: int) -> None:
    """One request in all, one caller got it from the authority, the rest from the cache."""
    found = caller_results(reported)
    assert len(found) == callers
    assert sum(report["hits"] for report in reported) == 1
    sources = sorted(result["token_source"] for result in found)
    assert sources == ["cache"] * (callers - 1) + ["identity_provider"], found
    assert len({result["access_token"] for result in found}) == 1


def wait_for_pid(marker: Path, procs: list[subprocess.Popen[str]]) -> int:
    """The pid the hung worker wrote in ``marker`` (bounded; fails if a worker ended first)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = marker.read_text() if marker.exists() else ""
        if text:
            return int(text)
        assert all(proc.poll() is None for proc in procs), "a worker ended before the hang"
        time.sleep(0.01)
    pytest.fail("no worker reached the token endpoint")
