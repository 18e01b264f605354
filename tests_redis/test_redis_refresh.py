"""Coordinated refresh on the Redis store (issue 12): one request for many processes.

The scenarios of ``tests/test_refresh_coordination.py`` (the same workers, told
``--redis URL --redis-key KEY``) against the real server, then the lease itself: exclusion
across store instances, expiry when its holder dies, the fenced failure record, a server
that is down, and cache hits that stay free of any round trip.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import pytest
from redis.crc import key_slot

from msal_persist import (
    LeaseExpiredError,
    PersistedTokenCache,
    RedisStore,
    StoreUnavailableError,
    coordinate_refreshes,
)
from msal_persist._redis_lease import FAILURE_RECORD_TTL
from msal_persist._refresh import refresh_key
from msal_persist._store import RefreshLeases
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from process_helpers import run_all, running, start, stop, worker
from redis_helpers import command_calls, wait_until
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

KEY = "shared"
LEASE_KEY = "0123456789abcdef01234567"


def _seed(url, kind, key=KEY):
    seed(PersistedTokenCache(store=RedisStore(url, key)), kind)


def _commands(url, tmp_path, kind, processes, *, lease=10.0, key=KEY, **options):
    store = ["--redis", url, "--redis-key", key, "--lease", str(lease)]
    return stampede_commands(store, tmp_path, kind, processes, **options)


def _leftovers(admin):
    """Keys besides the cache's: a lease, its record (a handoff list lives 1 s at most)."""
    return sorted(k for k in admin.keys("*") if k != KEY.encode() and not k.endswith(b":handoff"))


# -- many processes ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["public", "confidential", "client"])
def test_sixteen_processes_one_request(tmp_path, url, admin, kind):
    """16 processes whose shared access token just expired: 1 request, 15 take it from cache."""
    _seed(url, kind)
    reports = worker_reports(run_all(_commands(url, tmp_path, kind, 16)))
    assert_one_refresh(reports, 16)
    assert _leftovers(admin) == []  # every lease given back, no failure record


def test_threads_in_processes_one_request(tmp_path, url):
    """4 threads in each of 4 processes, one application per process: 1 request in all."""
    _seed(url, "public")
    reports = worker_reports(run_all(_commands(url, tmp_path, "public", 4, threads=4)))
    assert_one_refresh(reports, 16)


def test_without_coordination_every_process_asks(tmp_path, url):
    """``coordinate_refresh=False``: 8 processes, 8 requests (what the lease prevents).

    Each request waits until all 8 have been sent, so no process can find another's token.
    """
    _seed(url, "public")
    gather = tmp_path / "gather"
    commands = _commands(url, tmp_path, "public", 8, coordinate="off", fault=f"gather:{gather}")
    reports = worker_reports(run_all(commands))
    assert sum(report["hits"] for report in reports) == 8
    sources = [r["token_source"] for r in caller_results(reports)]
    assert sources == ["identity_provider"] * 8


@pytest.mark.parametrize("kind", ["public", "client"])
def test_error_of_the_refresher_is_returned_to_waiters(tmp_path, url, admin, kind):
    """The authority fails the one request: every other process returns that error, unasked.

    As on the file store: each worker's authority would fail its own first request too, so
    a waiter that asked would show up as a second hit; the back-off is made long because a
    loaded machine can hold a process back for seconds after the barrier.
    """
    _seed(url, kind)
    commands = _commands(url, tmp_path, kind, 8, fault="error", failure_backoff=600)
    reports = worker_reports(run_all(commands))
    results = caller_results(reports)
    assert sum(report["hits"] for report in reports) == 1
    assert {result["error"] for result in results} == {"invalid_grant"}
    assert len({result["correlation_id"] for result in results}) == 1
    (record,) = _leftovers(admin)
    assert record.endswith(b":failed")
    assert 0 < admin.pttl(record) <= FAILURE_RECORD_TTL * 1000
    assert b"secret" not in admin.get(record)
    # Within the back-off, a new call gets the same error without asking.
    authority = LocalAuthority()
    cache = PersistedTokenCache(store=RedisStore(url, KEY))
    cache.refresh_coordinator.failure_backoff = 3600
    if kind == "client":
        again = coordinate_refreshes(
            authority.confidential_client(token_cache=cache)
        ).acquire_token_for_client(APP_SCOPES)
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
    assert _leftovers(admin) == []  # the failure record went with that success


def test_refresher_killed_inside_its_request(tmp_path, url, admin):
    """The refresher is SIGKILLed inside its request: the others finish, 2 requests in all.

    The waiters' own timeout (60 s) is far above the bound asserted: the lease (2 s here)
    expires on the server, and the next waiter refreshes for everyone.
    """
    _seed(url, "public")
    marker = tmp_path / "hung-pid"
    commands = _commands(
        url, tmp_path, "public", 8, lease=2, fault=f"hang:{marker}", refresh_timeout=60
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
    assert len({result["access_token"] for result in results}) == 1
    assert finished_in < 15, finished_in
    assert _leftovers(admin) == []


def test_waiters_stop_waiting_for_a_hung_refresher(tmp_path, url):
    """A refresher that hangs past refresh_timeout (its lease lasts longer): one refreshes."""
    _seed(url, "public")
    marker = tmp_path / "hung-pid"
    commands = _commands(
        url, tmp_path, "public", 4, lease=60, fault=f"hang:{marker}", refresh_timeout=2
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


# -- one process ------------------------------------------------------------------------


def _expired_user(url, **options):
    authority = LocalAuthority(access_token_lifetime=EXPIRED)
    store = RedisStore(url, KEY, **options)
    app = coordinate_refreshes(
        authority.public_client(token_cache=PersistedTokenCache(store=store))
    )
    authority.sign_in(app)
    authority.access_token_lifetime = 3600
    authority.reset_counters()
    return authority, app, store


def test_a_redis_store_coordinates(url):
    """RedisStore offers refresh leases, so a cache on it coordinates (it did not before)."""
    store = RedisStore(url, KEY)
    assert isinstance(store, RefreshLeases)
    assert PersistedTokenCache(store=store).refresh_coordinator.enabled
    assert not PersistedTokenCache(
        store=store, coordinate_refresh=False
    ).refresh_coordinator.enabled


def test_one_lease_object_per_key(url):
    """The same object for the same key (threads queue on it); keys are letters and digits."""
    store = RedisStore(url, KEY)
    lease = store.refresh_lease(LEASE_KEY)
    assert store.refresh_lease(LEASE_KEY) is lease
    assert store.refresh_lease(f"{LEASE_KEY}g1") is not lease
    for bad in ("", "../x", "a{b}", "a b", "é"):
        with pytest.raises(ValueError, match="letters and digits"):
            store.refresh_lease(bad)


@pytest.mark.parametrize("key", ["shared", "web:{user.tenant}"])
def test_lease_keys_share_the_hash_slot_of_the_cache(url, admin, key):
    """Lease, failure record and handoff are in the cache key's Redis Cluster slot."""
    lease = RedisStore(url, key).refresh_lease(LEASE_KEY)
    assert lease.acquire(0)
    lease.record_failure(b"{}")
    held = {k for k in admin.keys("*") if b":refresh-" in k}
    lease.release()
    siblings = held | {k for k in admin.keys("*") if b":refresh-" in k}
    assert len(siblings) == 3  # the lease, its failure record, the handoff list
    assert {key_slot(k) for k in siblings} == {key_slot(key.encode())}


def test_two_stores_exclude_each_other(url, admin):
    """Two store instances (two processes, two machines): one holder; release hands over."""
    a = RedisStore(url, KEY).refresh_lease(LEASE_KEY)
    b = RedisStore(url, KEY).refresh_lease(LEASE_KEY)
    assert a.acquire(0)
    assert not b.acquire(0)
    started = time.monotonic()
    assert not b.acquire(0.3)
    assert 0.3 <= time.monotonic() - started < 5  # bounded by the timeout given
    got: list[tuple[float, bool]] = []

    def wait_then_give_back() -> None:
        if b.acquire(30):
            # a's object is free in this process, but the server says b holds the lease.
            got.append((time.monotonic(), a.acquire(0)))
            b.release()

    waiter = threading.Thread(target=wait_then_give_back)
    waiter.start()
    wait_until(lambda: any(c["cmd"] == "blpop" for c in admin.client_list()), what="b waiting")
    released_at = time.monotonic()
    a.release()
    waiter.join(timeout=30)
    ((taken_at, a_too),) = got
    assert not a_too
    assert taken_at - released_at < 10  # woken by the release, not by its 30 s timeout
    assert a.acquire(0)
    a.release()


def test_threads_of_one_process_queue_on_the_object(url):
    """The lease belongs to the thread that took it: others wait, and may not release it."""
    lease = RedisStore(url, KEY).refresh_lease(LEASE_KEY)
    assert lease.acquire(0)
    outcome: dict[str, object] = {}

    def other() -> None:
        outcome["acquired"] = lease.acquire(0.2)
        try:
            lease.release()
        except RuntimeError as error:
            outcome["release"] = error
        try:
            lease.record_failure(b"x")
        except RuntimeError as error:
            outcome["record"] = error

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=30)
    assert outcome["acquired"] is False
    assert isinstance(outcome["release"], RuntimeError)
    assert isinstance(outcome["record"], RuntimeError)
    assert lease.is_held
    lease.release()
    assert not lease.is_held


def test_record_failure_only_while_held(url, admin):
    """The record is written and removed by the holder only, with an expiry."""
    store = RedisStore(url, KEY)
    lease = store.refresh_lease(LEASE_KEY)
    with pytest.raises(RuntimeError, match="not held"):
        lease.record_failure(b"failed")
    assert lease.acquire(0)
    lease.record_failure(b"failed")
    lease.release()
    other = RedisStore(url, KEY).refresh_lease(LEASE_KEY)
    assert other.failure() == b"failed"
    (record,) = [k for k in admin.keys("*") if k.endswith(b":failed")]
    assert 0 < admin.pttl(record) <= FAILURE_RECORD_TTL * 1000
    with pytest.raises(RuntimeError, match="not held"):
        lease.record_failure(None)
    assert other.acquire(0)
    assert other.failure() == b"failed"  # read with the lease
    other.record_failure(None)
    assert other.failure() is None
    other.release()
    assert lease.failure() is None
    assert admin.exists(record) == 0


def test_lease_expires_when_its_holder_stops(url, admin, caplog):
    """A holder that never gives back (paused, partitioned): the lease is free after it.

    Its late writes are fenced: its failure record is refused, its release leaves the
    next holder's lease alone and logs a warning.
    """
    stalled = RedisStore(url, KEY, lease=0.5).refresh_lease(LEASE_KEY)
    other = RedisStore(url, KEY, lease=0.5).refresh_lease(LEASE_KEY)
    assert stalled.acquire(0)
    started = time.monotonic()
    assert other.acquire(10)
    assert time.monotonic() - started < 5  # the lease's 0.5 s, not the 10 s timeout
    with pytest.raises(LeaseExpiredError):
        stalled.record_failure(b"late")
    with caplog.at_level(logging.WARNING, logger="msal_persist"):
        stalled.release()
    assert "expired after 0.5 s" in caplog.text
    assert other.failure() is None  # read with the lease: nothing was written
    assert admin.get(f"{{{KEY}}}:refresh-{LEASE_KEY}".encode()) is not None  # still other's
    other.release()


def test_lease_of_a_killed_process_expires(url):
    """A holder killed with SIGKILL: the lease is free within its expiry, not the timeout."""
    store_args = ["--redis", url, "--redis-key", KEY, "--lease", "1"]
    lease = RedisStore(url, KEY).refresh_lease(LEASE_KEY)
    with running(worker("refresh", "hold_lease", *store_args, LEASE_KEY)) as holder:
        assert not lease.acquire(0)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        started = time.monotonic()
        assert lease.acquire(30)
        assert time.monotonic() - started < 10
    lease.release()


def test_server_down(own_server, caplog):
    """Server gone: failure() is None (never raises); acquire raises holding nothing."""
    store = RedisStore(own_server.url, KEY, timeout=1)
    lease = store.refresh_lease(LEASE_KEY)
    assert lease.acquire(0)
    lease.record_failure(b"failed")
    lease.release()
    own_server.kill()
    other = RedisStore(own_server.url, KEY, timeout=1.5).refresh_lease(LEASE_KEY)
    assert other.failure() is None
    with pytest.raises(StoreUnavailableError):
        lease.acquire(0)
    assert not lease.is_held
    assert not lease._thread_lock.locked()
    own_server.start()  # empty: no persistence of what the killed server held
    assert lease.acquire(0)
    with caplog.at_level(logging.WARNING, logger="msal_persist"):
        own_server.kill()
        lease.release()  # logged, not raised: the expiry frees it
    assert "could not give back" in caplog.text
    assert not lease.is_held


def test_a_lease_the_server_took_for_a_lost_reply_is_taken_back(url, admin):
    """A take whose reply was lost may have set our token: the next acquire reclaims it."""
    lease = RedisStore(url, KEY, lease=60).refresh_lease(LEASE_KEY)
    lease._unsure = "lost 1 2"  # what a call that raised after the server ran it leaves
    admin.set(f"{{{KEY}}}:refresh-{LEASE_KEY}", "lost 1 2", px=60_000)
    assert lease.acquire(0)  # at once, not after its 60 s
    lease.release()
    assert admin.exists(f"{{{KEY}}}:refresh-{LEASE_KEY}") == 0
    with pytest.raises(ValueError, match=">= 0"):
        lease.acquire(-1)


def test_threads_of_one_process_share_one_request(url):
    """8 threads of one process on one application: the authority answers one of them."""
    authority, app, _ = _expired_user(url)
    authority.token_delay = 0.2  # every thread misses before the first answer comes
    account = app.get_accounts()[0]
    results = []
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


def test_a_cache_hit_through_a_coordinated_app_sends_nothing(url, admin):
    """After a coordinated refresh, hits are served locally: no lease, no command at all."""
    authority, app, store = _expired_user(url)
    account = app.get_accounts()[0]
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"
    wait_until(lambda: store.local_copy, what="the invalidation channel")
    app.acquire_token_silent(DEFAULT_SCOPES, account)  # the one reload after the channel
    before, sent = command_calls(admin), store.round_trips
    for _ in range(50):
        assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "cache"
    after = command_calls(admin)
    assert store.round_trips == sent
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
        "info": 1
    }
    assert authority.token_endpoint_hits == 1


def test_a_coordinated_refresh_costs_three_more_round_trips(url):
    """Read the failure record, take the lease (its record with it), give it back: 3 more."""
    _, app, store = _expired_user(url)
    account = app.get_accounts()[0]
    wait_until(lambda: store.local_copy, what="the invalidation channel")
    app.get_accounts()  # the one reload after the channel
    before = store.round_trips
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"
    # The store's own three (lock-and-read, write, release), counted in the same place.
    assert store.round_trips - before == 3 + 3


def test_refresh_exception_gives_the_lease_back(url, admin):
    """A transport error inside the refresh raises as before and leaves no lease held."""
    authority, app, store = _expired_user(url)

    def fail(_form):
        raise ConnectionError("the network is down")

    authority.on_token_request = fail
    account = app.get_accounts()[0]
    with pytest.raises(ConnectionError):
        app.acquire_token_silent(DEFAULT_SCOPES, account)
    (lease,) = store._leases.values()
    assert not lease.is_held
    assert _leftovers(admin) == []
    authority.on_token_request = None
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"


def _query(app, account):
    return {
        "client_id": app.client_id,
        "environment": account["environment"],
        "realm": account["realm"],
        "home_account_id": account["home_account_id"],
    }


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT needs main"
)
def test_ctrl_c_while_waiting_for_another_refresher(url):
    """Ctrl-C while waiting for another process's lease: raised at once, nothing held."""
    authority, app, store = _expired_user(url)
    account = app.get_accounts()[0]
    key = refresh_key(_query(app, account), DEFAULT_SCOPES)
    store_args = ["--redis", url, "--redis-key", KEY]
    with running(worker("refresh", "hold_lease", *store_args, key)) as holder:
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                app.acquire_token_silent(DEFAULT_SCOPES, account)
        finally:
            timer.cancel()
        (lease,) = store._leases.values()
        assert not lease.is_held
        assert not lease._thread_lock.locked()
        assert authority.token_endpoint_hits == 0
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "identity_provider"


def test_no_lease_across_fork(url):
    """A child forked while the parent holds the lease holds nothing and waits like others."""
    lease = RedisStore(url, KEY, local_copy=False).refresh_lease(LEASE_KEY)
    assert lease.acquire(0)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 0 if not lease.is_held and not lease.acquire(0) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert lease.is_held
    lease.release()


def test_lease_key_is_not_the_partition(url, caplog):
    """Log lines name a partition's lease by the store's shown name, never the partition."""
    from msal_persist import RedisPartitions  # noqa: PLC0415 - beside the store it makes

    store = RedisPartitions(url, prefix="web:").for_user("uid.utid")
    lease = store.refresh_lease(LEASE_KEY)
    with caplog.at_level(logging.DEBUG, logger="msal_persist"):
        assert lease.acquire(0)
        lease.release()
    assert "refresh lease" in caplog.text
    assert "uid.utid" not in caplog.text
    assert "uid.utid" not in repr(lease)


def test_redis_errors_are_mapped(own_server):
    """A server that refuses (not only one that is gone) fails acquire with our error."""
    store = RedisStore(own_server.url, KEY)
    lease = store.refresh_lease(LEASE_KEY)
    admin = own_server.admin()
    try:
        admin.config_set("maxmemory", 1)  # every write refused: OOM
        admin.config_set("maxmemory-policy", "noeviction")
        with pytest.raises(StoreUnavailableError, match="refused"):
            lease.acquire(0)
        assert not lease.is_held
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    assert lease.acquire(0)
    lease.release()
