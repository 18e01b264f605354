"""Faults of a real server: absent, killed and restarted, paused, a holder killed, a drop."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import redis

from msal_persist import (
    LeaseExpiredError,
    PersistedTokenCache,
    RedisStore,
    StoreUnavailableError,
)
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from process_helpers import running, worker
from redis_helpers import RedisServer, free_port, wait_until


def _app(store: RedisStore, authority: LocalAuthority | None = None):
    authority = authority or LocalAuthority()
    cache = PersistedTokenCache(store=store)
    return authority, authority.public_client(token_cache=cache), cache


def _usernames(document: bytes | None) -> set[str]:
    if document is None:
        return set()
    return {entry["username"] for entry in json.loads(document)["Account"].values()}


def test_server_not_running_at_startup_is_a_clear_error() -> None:
    """Nothing listens: the first msal call raises StoreUnavailableError, quickly."""
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", "k", timeout=0.5)
    _, app, _ = _app(store)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as caught:
        app.get_accounts()
    assert time.monotonic() - started < 5
    assert caught.value.operation == "read"
    assert "did not answer" in str(caught.value)
    assert "refused" in str(caught.value).lower()


def test_server_killed_and_restarted_mid_run_loses_nothing_acknowledged(
    own_server: RedisServer,
) -> None:
    """SIGKILL while signing users in, restart: clients reconnect, every acknowledged user stays."""
    store = RedisStore(own_server.url, "k", timeout=0.5, lease=1)
    authority, app, _ = _app(store)
    reader = RedisStore(redis.Redis.from_url(own_server.url, socket_timeout=0.5), "k")
    _, reader_app, _ = _app(reader, authority)
    authority.sign_in(app, "first@example.test")
    wait_until(lambda: reader.local_copy, what="the reader's channel")
    assert [a["username"] for a in reader_app.get_accounts()] == ["first@example.test"]

    def kill_then_restart() -> None:
        time.sleep(0.3)
        own_server.kill()
        time.sleep(1.5)  # longer than redis-py's retries: some calls must fail
        own_server.start()

    chaos = threading.Thread(target=kill_then_restart)
    chaos.start()
    acknowledged, failures = {"first@example.test"}, []
    deadline = time.monotonic() + 3
    index = 0
    while time.monotonic() < deadline or chaos.is_alive():
        username = f"user{index}@example.test"
        index += 1
        try:
            authority.sign_in(app, username)
        except StoreUnavailableError as error:
            failures.append(error)
            continue
        acknowledged.add(username)
    chaos.join()
    assert failures, "the server was never seen down"
    assert len(acknowledged) > 5
    authority.sign_in(app, "after@example.test")  # the writer reconnected
    acknowledged.add("after@example.test")
    stored = _usernames(own_server.admin().get("k"))
    assert acknowledged <= stored
    wait_until(lambda: reader.local_copy, what="the reader's channel to come back")
    assert {a["username"] for a in reader_app.get_accounts()} == stored


def test_server_paused_beyond_the_timeouts_is_a_bounded_wait(own_server: RedisServer) -> None:
    """SIGSTOP: a write fails within the bound with a clear error; SIGCONT: it works again."""
    store = RedisStore(own_server.url, "k", timeout=0.5, lease=30)
    authority, app, _ = _app(store)
    authority.sign_in(app)
    account = app.get_accounts()[0]
    own_server.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as caught:
            app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
        elapsed = time.monotonic() - started
        assert "did not answer" in str(caught.value)
        # Three attempts of 0.5 s and redis-py's back-off between them; never a hang.
        assert elapsed < 6
    finally:
        own_server.signal(signal.SIGCONT)
    result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
    assert "access_token" in result


def test_a_lock_holder_killed_mid_write_blocks_others_one_lease_at_most(url: str, admin) -> None:
    """A process holding the lock is SIGKILLed; the next writer goes on after the lease."""
    authority, app, _ = _app(RedisStore(url, "k"))
    authority.sign_in(app, "before@example.test")
    with running(worker("redis_cache", "hold_lock", url, "k", "1.0")) as holder:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    started = time.monotonic()
    authority.sign_in(app, "after@example.test")
    waited = time.monotonic() - started
    assert waited < 5
    assert _usernames(admin.get("k")) == {"before@example.test", "after@example.test"}


def test_a_connection_dropped_inside_a_transaction_still_writes_once(url: str, admin) -> None:
    """The connection dies between read and write: the fenced write reconnects and lands."""
    authority, app, cache = _app(RedisStore(url, "k"))
    authority.sign_in(app, "ada@example.test")
    authority.sign_in(app, "bob@example.test")
    with cache.transaction():
        cache.remove_accounts([authority.home_account_id("ada@example.test")])
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert _usernames(admin.get("k")) == {"bob@example.test"}
    assert not admin.exists("{k}:lock")


def test_a_drop_that_outlasts_the_lease_writes_nothing_and_loses_nothing(url: str, admin) -> None:
    """Dropped and paused past the lease while another writer got in: LeaseExpiredError."""
    authority, app, cache = _app(RedisStore(url, "k", lease=0.3))
    other_authority, other_app, _ = _app(RedisStore(url, "k"))
    authority.sign_in(app, "ada@example.test")
    with pytest.raises(LeaseExpiredError), cache.transaction():
        cache.remove_accounts([authority.home_account_id("ada@example.test")])
        admin.client_kill_filter(_type="normal", skipme=True)
        time.sleep(0.4)  # past the lease: the other writer takes the lock
        other_authority.sign_in(other_app, "bob@example.test")
    assert _usernames(admin.get("k")) == {"ada@example.test", "bob@example.test"}
    # The cache instance recovers: it reloads and writes on top of the newest content.
    authority.sign_in(app, "cy@example.test")
    assert _usernames(admin.get("k")) == {
        "ada@example.test",
        "bob@example.test",
        "cy@example.test",
    }
