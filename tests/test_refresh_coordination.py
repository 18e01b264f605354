"""Coordinated refresh (issue 12): one token request when many processes need the same one.

Real processes with real msal applications against ``LocalAuthority``; each worker counts the
requests that reached its own authority and the parent adds them up.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from msal_persist import FileStore, PersistedTokenCache, coordinate_refreshes
from msal_persist._refresh import refresh_key
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from process_helpers import run_all, running, start, stop, worker
from refresh_helpers import (
    APP_SCOPES,
    EXPIRED,
    assert_one_refresh,
    caller_results,
    seed,
    stampede_commands,
    wait_for_pid,
    worker_reports,
)


def _seed(cache_path: Path, kind: str) -> None:
    seed(PersistedTokenCache(cache_path), kind)


def _commands(
    cache_path: Path, tmp_path: Path, kind: str, processes: int, **options: Any
) -> list[list[str]]:
    return stampede_commands([str(cache_path)], tmp_path, kind, processes, **options)


@pytest.mark.parametrize("kind", ["public", "confidential", "client"])
def test_sixteen_processes_one_request(tmp_path: Path, cache_path: Path, kind: str) -> None:
    """16 processes whose shared access token just expired: 1 request, 15 take it from cache."""
    _seed(cache_path, kind)
    reports = worker_reports(run_all(_commands(cache_path, tmp_path, kind, 16)))
    assert_one_refresh(reports, 16)


def test_threads_in_processes_one_request(tmp_path: Path, cache_path: Path) -> None:
    """4 threads in each of 4 processes, one application per process: 1 request in all."""
    _seed(cache_path, "public")
    reports = worker_reports(run_all(_commands(cache_path, tmp_path, "public", 4, threads=4)))
    assert_one_refresh(reports, 16)


def test_without_coordination_every_process_asks(tmp_path: Path, cache_path: Path) -> None:
    """``coordinate_refresh=False``: processes that miss together each ask (the baseline).

    How many miss together is up to the scheduler (a late one may find a fresh token).
    """
    _seed(cache_path, "public")
    commands = _commands(cache_path, tmp_path, "public", 4, coordinate="off")
    reports = worker_reports(run_all(commands))
    hits = sum(report["hits"] for report in reports)
    assert hits >= 2
    sources = [r["token_source"] for r in caller_results(reports)]
    assert sources.count("identity_provider") == hits


@pytest.mark.parametrize("kind", ["public", "client"])
def test_error_of_the_refresher_is_returned_to_waiters(
    tmp_path: Path, cache_path: Path, kind: str
) -> None:
    """The authority fails the one request: every other process returns that error, unasked.

    Each worker's authority would fail its own first request too, so any waiter that asked
    would show up as a second hit. Processes waiting for the refresher get its error; one
    that misses only after the failure gets it through the back-off, made long here
    because a loaded machine can hold a process back for seconds after the barrier.
    """
    _seed(cache_path, kind)
    commands = _commands(cache_path, tmp_path, kind, 8, fault="error", failure_backoff=600)
    reports = worker_reports(run_all(commands))
    results = caller_results(reports)
    assert sum(report["hits"] for report in reports) == 1
    assert {result["error"] for result in results} == {"invalid_grant"}
    # The very same response, not eight look-alikes.
    assert len({result["correlation_id"] for result in results}) == 1
    # Within the back-off (made long here: the workers took their time to exit), a new call
    # gets the same error without asking.
    authority = LocalAuthority()
    cache = PersistedTokenCache(cache_path)
    cache.refresh_coordinator.failure_backoff = 3600
    if kind == "client":
        app = coordinate_refreshes(authority.confidential_client(token_cache=cache))
        again = app.acquire_token_for_client(APP_SCOPES)
    else:
        app = coordinate_refreshes(authority.public_client(token_cache=cache))
        again = app.acquire_token_silent_with_error(DEFAULT_SCOPES, app.get_accounts()[0])
    assert again["error"] == "invalid_grant"
    assert authority.token_endpoint_hits == 0
    # After it, the next call asks the authority again, and succeeds.
    cache.refresh_coordinator.failure_backoff = 0
    if kind == "client":
        app = coordinate_refreshes(authority.confidential_client(token_cache=cache))
        result = app.acquire_token_for_client(APP_SCOPES)
    else:
        app = coordinate_refreshes(authority.public_client(token_cache=cache))
        result = app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0])
    assert result is not None
    assert result["token_source"] == "identity_provider"
    assert authority.token_endpoint_hits == 1
    # The failure record went with that success; no lock file is left.
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["token_cache.json"]


def test_refresher_killed_inside_its_request(tmp_path: Path, cache_path: Path) -> None:
    """The refresher is SIGKILLed inside its request: the others finish, 2 requests in all.

    The waiters' own timeout (60 s) is far above the bound asserted: the kernel frees the
    dead holder's lease, and the next waiter refreshes for everyone.
    """
    _seed(cache_path, "public")
    marker = tmp_path / "hung-pid"
    commands = _commands(
        cache_path, tmp_path, "public", 8, fault=f"hang:{marker}", refresh_timeout=60
    )
    procs = [start(command) for command in commands]
    try:
        hung = wait_for_pid(marker, procs)
        os.kill(hung, signal.SIGKILL)
        killed_at = time.monotonic()
        reports = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            if proc.pid == hung:
                assert proc.returncode == -signal.SIGKILL
                continue
            assert proc.returncode == 0, err[-3000:]
            reports.append(json.loads(out))
        finished_in = time.monotonic() - killed_at
    finally:
        for proc in procs:
            stop(proc)
    results = caller_results(reports)
    assert len(results) == 7
    # The hung request reached the endpoint once; the reporting workers add one more.
    assert 1 + sum(report["hits"] for report in reports) == 2
    assert all(result["access_token"] for result in results)
    assert finished_in < 20, finished_in
    assert not list(cache_path.parent.glob("*.lockfile"))


def test_waiters_stop_waiting_for_a_hung_refresher(tmp_path: Path, cache_path: Path) -> None:
    """A refresher that hangs past refresh_timeout: one waiter refreshes for the others."""
    _seed(cache_path, "public")
    marker = tmp_path / "hung-pid"
    commands = _commands(
        cache_path, tmp_path, "public", 4, fault=f"hang:{marker}", refresh_timeout=2
    )
    procs = [start(command) for command in commands]
    try:
        hung = wait_for_pid(marker, procs)
        reports = []
        for proc in procs:
            if proc.pid == hung:
                continue
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err[-3000:]
            reports.append(json.loads(out))
    finally:
        for proc in procs:
            stop(proc)
    results = caller_results(reports)
    assert len(results) == 3
    assert sum(report["hits"] for report in reports) == 1
    assert sorted(r["token_source"] for r in results) == ["cache", "cache", "identity_provider"]


# -- in one process ---------------------------------------------------------------------


def _expired_user(cache_path: Path) -> tuple[LocalAuthority, Any]:
    authority = LocalAuthority(access_token_lifetime=EXPIRED)
    app = coordinate_refreshes(authority.public_client(token_cache=PersistedTokenCache(cache_path)))
    authority.sign_in(app)
    authority.access_token_lifetime = 3600
    authority.reset_counters()
    return authority, app


def test_cache_hit_takes_no_lease(cache_path: Path) -> None:
    """A cache hit through a coordinated app touches no lease: nothing beside the cache."""
    authority, app = _expired_user(cache_path)
    account = app.get_accounts()[0]
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"
    store = app.token_cache.store
    before = store.loads
    result = app.acquire_token_silent(DEFAULT_SCOPES, account)
    assert result["token_source"] == "cache"
    assert store.loads == before
    assert authority.token_endpoint_hits == 1
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["token_cache.json"]


def test_threads_of_one_process_share_one_request(cache_path: Path) -> None:
    """8 threads of one process on one application: the authority answers one of them."""
    authority, app = _expired_user(cache_path)
    authority.token_delay = 0.2  # every thread misses before the first answer comes
    account = app.get_accounts()[0]
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(app.acquire_token_silent(DEFAULT_SCOPES, account))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert authority.token_endpoint_hits == 1
    assert sorted(r["token_source"] for r in results) == ["cache"] * 7 + ["identity_provider"]


def test_waiters_get_the_error_of_the_refresh_they_waited_for(cache_path: Path) -> None:
    """No back-off at all: the threads that waited for the failed refresh still get its error."""
    authority, app = _expired_user(cache_path)
    app.token_cache.refresh_coordinator.failure_backoff = 0
    authority.fail_token_requests("invalid_grant")
    authority.token_delay = 1.0  # every thread misses while the one request is in flight
    account = app.get_accounts()[0]
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                app.acquire_token_silent_with_error(DEFAULT_SCOPES, account)
            )
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert authority.token_endpoint_hits == 1
    assert [r["error"] for r in results] == ["invalid_grant"] * 4
    # With no back-off, the next call asks again (from a new app: msal's own HTTP cache
    # would replay the 400 to this one).
    authority.token_delay = 0
    again = coordinate_refreshes(authority.public_client(token_cache=app.token_cache))
    assert (
        again.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"
    )
    assert authority.token_endpoint_hits == 2


def test_a_refresh_finished_between_the_miss_and_the_lease_is_found(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process refreshes and lets go after our miss, before our lease: no request."""
    authority, app = _expired_user(cache_path)
    account = app.get_accounts()[0]
    other = LocalAuthority()
    other_app = coordinate_refreshes(
        other.public_client(token_cache=PersistedTokenCache(cache_path))
    )
    coordinator = app.token_cache.refresh_coordinator
    take_turn = coordinator.take_turn

    def late_turn(key: str) -> Any:
        # The other process's whole refresh fits in the window after our search missed.
        result = other_app.acquire_token_silent(DEFAULT_SCOPES, account)
        assert result["token_source"] == "identity_provider"
        return take_turn(key)

    monkeypatch.setattr(coordinator, "take_turn", late_turn)
    result = app.acquire_token_silent(DEFAULT_SCOPES, account)
    assert result["token_source"] == "cache"
    assert authority.token_endpoint_hits == 0
    assert other.token_endpoint_hits == 1


def test_a_refresh_failed_just_before_the_lease_is_returned(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process fails and lets go just before our lease: its error, no request."""
    authority, app = _expired_user(cache_path)
    account = app.get_accounts()[0]
    other = LocalAuthority()
    other.fail_token_requests("invalid_grant")
    other_app = coordinate_refreshes(
        other.public_client(token_cache=PersistedTokenCache(cache_path))
    )
    lease = app.token_cache.store.refresh_lease(refresh_key(_query(app, account), DEFAULT_SCOPES))
    acquire = lease.acquire

    def late_acquire(timeout: float | None) -> bool:
        # The other process's whole failed refresh fits in the window before our lease.
        if timeout == 0:
            result = other_app.acquire_token_silent_with_error(DEFAULT_SCOPES, account)
            assert result["error"] == "invalid_grant"
        return acquire(timeout)

    monkeypatch.setattr(lease, "acquire", late_acquire)
    result = app.acquire_token_silent_with_error(DEFAULT_SCOPES, account)
    assert result["error"] == "invalid_grant"
    assert authority.token_endpoint_hits == 0
    assert other.token_endpoint_hits == 1
    assert not lease.lock.is_held


def _query(app: Any, account: dict[str, Any]) -> dict[str, Any]:
    """The access-token query msal makes for this account (what the lease key hashes)."""
    return {
        "client_id": app.client_id,
        "environment": account["environment"],
        "realm": account["realm"],
        "home_account_id": account["home_account_id"],
    }


def test_uncoordinated_calls_are_untouched(cache_path: Path) -> None:
    """Calls not made through coordinate_refreshes() take no lease (msal as it was)."""
    authority = LocalAuthority(access_token_lifetime=EXPIRED)
    app = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    authority.sign_in(app)
    store = app.token_cache.store
    assert isinstance(store, FileStore)
    assert app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0]) is not None
    assert not store._leases


def test_refresh_exception_gives_the_lease_back(cache_path: Path) -> None:
    """A transport error inside the refresh raises as before and leaves no lease held."""
    authority, app = _expired_user(cache_path)

    def fail(_form: dict[str, str]) -> None:
        raise ConnectionError("the network is down")

    authority.on_token_request = fail
    account = app.get_accounts()[0]
    with pytest.raises(ConnectionError):
        app.acquire_token_silent(DEFAULT_SCOPES, account)
    (lease,) = app.token_cache.store._leases.values()
    assert not lease.lock.is_held
    authority.on_token_request = None
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"
    assert sorted(p.name for p in cache_path.parent.iterdir()) == ["token_cache.json"]


def test_silent_returns_none_on_a_shared_error(cache_path: Path) -> None:
    """acquire_token_silent keeps msal's contract: an error (its own or shared) is None."""
    authority, app = _expired_user(cache_path)
    authority.fail_token_requests("invalid_grant")
    assert app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0]) is None
    failed = list(cache_path.parent.glob("*.failed"))
    assert len(failed) == 1
    assert failed[0].stat().st_mode & 0o777 == 0o600
    assert "secret" not in failed[0].read_text()


def test_coordinate_refreshes_wraps_once_and_needs_a_persisted_cache(cache_path: Path) -> None:
    """Wrapping twice changes nothing; an app on another cache is refused."""
    authority = LocalAuthority()
    app = authority.confidential_client(token_cache=PersistedTokenCache(cache_path))
    silent = coordinate_refreshes(app).acquire_token_silent
    for_client = app.acquire_token_for_client
    coordinate_refreshes(app)
    assert app.acquire_token_silent is silent
    assert app.acquire_token_for_client is for_client
    with pytest.raises(TypeError, match="PersistedTokenCache"):
        coordinate_refreshes(authority.public_client())


def test_coordination_off_takes_no_lease(cache_path: Path) -> None:
    """coordinate_refresh=False: the coordinated call is msal's own call."""
    authority = LocalAuthority(access_token_lifetime=EXPIRED)
    cache = PersistedTokenCache(cache_path, coordinate_refresh=False)
    app = coordinate_refreshes(authority.public_client(token_cache=cache))
    authority.sign_in(app)
    assert not cache.refresh_coordinator.enabled
    assert app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0]) is not None
    assert not cache.store._leases


def test_refresh_key_names_no_account() -> None:
    """The lease key is a short hash: no home account id reaches a file name or a log."""
    query = {"client_id": "c", "home_account_id": "uid.utid", "realm": "r", "environment": "e"}
    key = refresh_key(query, ["b", "a"])
    assert key == refresh_key(dict(reversed(query.items())), ["a", "b"])
    assert key.isalnum()
    assert len(key) == 24
    assert "uid" not in key
    assert key != refresh_key(query, ["a"])


def test_lease_key_is_checked(cache_path: Path) -> None:
    """A lease key that could escape the directory is refused."""
    with pytest.raises(ValueError, match="letters and digits"):
        FileStore(cache_path).refresh_lease("../x")


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT needs main"
)
def test_ctrl_c_at_any_instant_of_a_coordinated_refresh_leaves_no_lease(cache_path: Path) -> None:
    """A Ctrl-C anywhere in a coordinated refresh: no lease held after the next call, no file.

    The refresh runs thousands of check points (its write included, which
    test_interrupts.py covers exhaustively); 100 of them, evenly spread, are targets here.
    """
    from test_interrupts import _run_interrupted  # noqa: PLC0415 - the interrupt injector

    _, app = _expired_user(cache_path)
    cache = app.token_cache
    account = app.get_accounts()[0]
    expired = cache.serialize()
    store = cache.store

    def refresh() -> None:
        app.acquire_token_silent(DEFAULT_SCOPES, account)

    def lease_files() -> list[str]:
        return sorted(p.name for p in cache_path.parent.iterdir() if ".refresh-" in p.name)

    # A Ctrl-C landing inside a finalizer is dropped by Python itself: not a target.
    spare = frozenset({"__del__"})
    total, _ = _run_interrupted(refresh, None, spare)
    assert total > 100
    for target in range(0, total, max(1, total // 100)):
        cache.deserialize(expired)
        _run_interrupted(refresh, target, spare)
        cache.deserialize(expired)
        refresh()  # the next call works, and gives back what an interrupted one left
        assert not any(lease.lock.is_held for lease in store._leases.values()), target
        assert lease_files() == [], f"after an interrupt at check point {target}"
        assert not store.lock.is_held


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT needs main"
)
def test_ctrl_c_while_waiting_for_another_refresher(cache_path: Path) -> None:
    """Ctrl-C while waiting for another process's lease: raised at once, nothing held."""
    authority, app = _expired_user(cache_path)
    account = app.get_accounts()[0]
    key = refresh_key(_query(app, account), DEFAULT_SCOPES)
    with running(worker("refresh", "hold_lease", str(cache_path), key)) as holder:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                app.acquire_token_silent(DEFAULT_SCOPES, account)
        finally:
            timer.cancel()
        (lease,) = app.token_cache.store._leases.values()
        assert not lease.lock.is_held
        assert authority.token_endpoint_hits == 0
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"
