"""The Redis store against a real server: writes, reads without round trips, coherence."""

from __future__ import annotations

import gc
import json
import logging
import pickle
import time
import weakref

import msal
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from msal_persist import (
    LeaseExpiredError,
    LockTimeoutError,
    PersistedTokenCache,
    RedisPartitions,
    RedisStore,
    StoreUnavailableError,
)
from msal_persist.testing import DEFAULT_CLIENT_ID, DEFAULT_SCOPES, LocalAuthority
from process_helpers import run_workers, worker
from redis_helpers import command_calls, wait_until


def _app(url_or_store, key="cache", authority=None, **options):
    authority = authority or LocalAuthority()
    store = (
        url_or_store
        if isinstance(url_or_store, RedisStore)
        else RedisStore(url_or_store, key, **options)
    )
    return authority, authority.public_client(token_cache=PersistedTokenCache(store=store)), store


def test_save_and_load_round_trip(url, admin):
    """What a transaction writes is the key's value, and a fresh store reads it back."""
    authority, app, _store = _app(url)
    authority.sign_in(app)
    document = json.loads(admin.get("cache"))
    assert len(document["RefreshToken"]) == 1
    fresh = RedisStore(url, "cache")
    assert json.loads(fresh.load().data) == document
    assert RedisStore(url, "nothing-here").load().data is None


def test_one_write_per_acquisition_none_on_a_hit(url):
    """A sign-in and a forced refresh write once each; a cache hit writes nothing."""
    authority, app, store = _app(url)
    authority.sign_in(app)
    assert store.saves == 1
    account = app.get_accounts()[0]
    for _ in range(5):
        assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "cache"
    assert store.saves == 1
    app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
    assert store.saves == 2


def test_a_forced_refresh_costs_three_round_trips(url):
    """Lock-and-read, fenced write, release: three commands per acquisition, no more."""
    authority, app, store = _app(url)
    authority.sign_in(app)
    account = app.get_accounts()[0]
    wait_until(lambda: store.local_copy, what="the invalidation channel")
    app.acquire_token_silent(DEFAULT_SCOPES, account)
    before = store.round_trips
    for _ in range(5):
        app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
    assert store.round_trips - before == 15


def test_a_cache_hit_sends_nothing_to_the_server(url, admin):
    """Once read, hits are served locally: the server's own counters do not move."""
    authority, app, store = _app(url)
    authority.sign_in(app)
    account = app.get_accounts()[0]
    app.acquire_token_silent(DEFAULT_SCOPES, account)
    wait_until(lambda: store.local_copy, what="the invalidation channel")
    app.acquire_token_silent(DEFAULT_SCOPES, account)  # the one reload after the channel
    before, sent = command_calls(admin), store.round_trips
    for _ in range(50):
        result = app.acquire_token_silent(DEFAULT_SCOPES, account)
        assert result["token_source"] == "cache"
    after = command_calls(admin)
    assert store.round_trips == sent
    # The admin's INFO is the only command the server ran meanwhile.
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {
        "info": 1
    }


def test_without_local_copy_every_hit_reads_the_key(url):
    """local_copy=False: a round trip per cache access, and still no write."""
    authority, app, store = _app(url, local_copy=False)
    authority.sign_in(app)
    account = app.get_accounts()[0]
    before = store.round_trips
    app.acquire_token_silent(DEFAULT_SCOPES, account)
    assert store.round_trips > before
    assert store.saves == 1


def _instances(url, key="shared"):
    authority = LocalAuthority()
    a = RedisStore(url, key)
    # Another client, so another connection pool and invalidation channel: another
    # machine's view (stores made from one URL share a client in a process).
    b = RedisStore(redis.Redis.from_url(url, socket_timeout=5), key)
    app_a = authority.public_client(token_cache=PersistedTokenCache(store=a))
    app_b = authority.public_client(token_cache=PersistedTokenCache(store=b))
    return authority, a, b, app_a, app_b


def test_b_sees_a_write_at_its_next_read_without_sleeping(url):
    """B serves hits locally; A refreshes; B's very next read returns A's token (50 times)."""
    authority, a, b, app_a, app_b = _instances(url)
    authority.sign_in(app_a)
    account_a, account_b = app_a.get_accounts()[0], app_b.get_accounts()[0]
    wait_until(lambda: b.local_copy and a.local_copy, what="both invalidation channels")
    app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
    for _ in range(50):
        sent = b.round_trips
        hit = app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
        assert hit["token_source"] == "cache"
        assert b.round_trips == sent  # served locally
        new = app_a.acquire_token_silent(DEFAULT_SCOPES, account_a, force_refresh=True)
        seen = app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
        assert seen["access_token"] == new["access_token"] != hit["access_token"]


def test_b_sees_another_process_write_at_its_next_read(url):
    """The same across processes: a worker refreshes, the parent's next read has its token."""
    authority, _, b, app_a, app_b = _instances(url)
    authority.sign_in(app_a)
    account = app_b.get_accounts()[0]
    wait_until(lambda: b.local_copy, what="the invalidation channel")
    app_b.acquire_token_silent(DEFAULT_SCOPES, account)
    for _ in range(3):
        sent = b.round_trips
        before = app_b.acquire_token_silent(DEFAULT_SCOPES, account)["access_token"]
        assert b.round_trips == sent
        (out,) = run_workers(
            [worker("redis_cache", "refresh_once", url, "shared", authority.username)]
        )
        after = app_b.acquire_token_silent(DEFAULT_SCOPES, account)["access_token"]
        assert after == json.loads(out)["access_token"] != before


def test_a_lost_channel_never_serves_a_stale_copy(url, admin):
    """The tracking connection is killed: B makes round trips, sees A's write, then recovers."""
    authority, _a, b, app_a, app_b = _instances(url)
    authority.sign_in(app_a)
    account_a, account_b = app_a.get_accounts()[0], app_b.get_accounts()[0]
    wait_until(lambda: b.local_copy, what="the invalidation channel")
    app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
    assert admin.client_kill_filter(_type="pubsub") >= 1  # every channel, B's included
    new = app_a.acquire_token_silent(DEFAULT_SCOPES, account_a, force_refresh=True)
    assert (
        app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)["access_token"] == new["access_token"]
    )
    wait_until(lambda: b.local_copy, what="the channel to come back")
    newer = app_a.acquire_token_silent(DEFAULT_SCOPES, account_a, force_refresh=True)
    assert (
        app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)["access_token"]
        == newer["access_token"]
    )


def test_clear_elsewhere_empties_every_local_copy(url):
    """A clear() by one instance is seen as an empty cache by the other's next read."""
    authority, a, b, app_a, app_b = _instances(url)
    authority.sign_in(app_a)
    wait_until(lambda: b.local_copy, what="the invalidation channel")
    assert app_b.get_accounts()
    assert PersistedTokenCache(store=a).clear() is True
    assert app_b.get_accounts() == []


def test_ttl_is_set_and_refreshed_on_write(url, admin):
    """ttl: the key expires that long after its last write; each write renews it."""
    authority, app, _store = _app(url, ttl=60)
    authority.sign_in(app)
    first = admin.pttl("cache")
    assert 55_000 < first <= 60_000
    admin.pexpire("cache", 5_000)
    app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0], force_refresh=True)
    assert 55_000 < admin.pttl("cache") <= 60_000


def test_an_expired_key_is_an_empty_cache_for_every_reader(url, admin):
    """When the TTL runs out, the local copy does not outlive the key."""
    authority, app, store = _app(url, ttl=0.3)
    authority.sign_in(app)
    wait_until(lambda: store.local_copy, what="the invalidation channel")
    assert app.get_accounts()
    wait_until(lambda: admin.exists("cache") == 0, what="the key to expire")
    wait_until(lambda: app.get_accounts() == [], timeout=5, what="the copy to be dropped")


def test_bad_bytes_are_set_aside_bounded(url, admin, caplog):
    """Bytes that are no cache go to <key>:corrupt (at most 5 kept); the cache goes on empty."""
    authority, app, store = _app(url)
    for index in range(7):
        admin.set("cache", f"not json {index}")
        with caplog.at_level(logging.WARNING, logger="msal_persist"):
            authority.sign_in(app)
        assert len(json.loads(admin.get("cache"))["Account"]) == 1
    kept = admin.hgetall("{cache}:corrupt")
    assert sorted(kept.values()) == [f"not json {i}".encode() for i in range(2, 7)]
    assert store.set_aside_copies() == sorted(k.decode() for k in kept)
    assert "{cache}:corrupt field" in caplog.text


def test_partitions_one_key_per_user_and_app_in_one_slot(url, admin):
    """Users and the app's own tokens land under their own keys, each partition in one slot."""
    authority = LocalAuthority()
    partitions = RedisPartitions(url, prefix="web:")
    home = authority.home_account_id("ada@example.test")
    user_store = partitions.for_user(home)
    app = authority.public_client(token_cache=PersistedTokenCache(store=user_store))
    authority.sign_in(app, "ada@example.test")
    assert user_store.key == f"web:{{{home}}}"
    assert admin.exists(user_store.key)
    app_store = partitions.for_app(DEFAULT_CLIENT_ID, authority.tenant_id)
    assert app_store.key == f"web:{{{DEFAULT_CLIENT_ID}_{authority.tenant_id}_AppTokenCache}}"
    confidential = authority.confidential_client(token_cache=PersistedTokenCache(store=app_store))
    assert "access_token" in confidential.acquire_token_for_client(["https://graph/.default"])
    assert json.loads(admin.get(app_store.key))["AccessToken"]
    keys = user_store._keys
    assert (
        key_slot(keys.data.encode())
        == key_slot(keys.lock.encode())
        == key_slot(keys.aside.encode())
    )
    assert home not in user_store.display_name  # a home account id never reaches a log
    plain = RedisStore(url, "plain")._keys
    assert key_slot(b"plain") == key_slot(plain.lock.encode()) == key_slot(plain.aside.encode())


def test_stores_made_from_one_url_share_a_client_and_a_channel(url):
    """A store per request from the same URL costs no new pool and no new channel."""
    first, second = RedisStore(url, "one"), RedisStore(url, "one")
    assert first.client is second.client
    assert first._tracker is second._tracker
    assert RedisStore(url, "other")._tracker is not first._tracker  # another prefix


def test_display_name_hides_the_password():
    """A password in the URL never shows in the store's name."""
    store = RedisStore("redis://user:s3cret@127.0.0.1:1/2", "k")
    assert "s3cret" not in store.display_name
    assert store.display_name == "redis://127.0.0.1:1/2 key 'k'"


def test_a_client_that_decodes_responses_is_refused(redis_server):
    """The document is bytes: a client with decode_responses=True is a clear error."""
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(client, "k")


def test_the_applications_own_client_is_used(redis_server, admin):
    """A client passed in is used as it is (its pool, its settings)."""
    client = redis.Redis(port=redis_server.port, socket_timeout=5, db=3)
    authority, app, store = _app(RedisStore(client, "mine"))
    authority.sign_in(app)
    assert store.client is client
    assert redis.Redis(port=redis_server.port, db=3).exists("mine")
    assert not admin.exists("mine")


def test_a_lease_that_expired_writes_nothing(url, admin):
    """A holder past its lease is refused (LeaseExpiredError); its successor's write stays."""
    slow = RedisStore(url, "fenced", lease=0.2)
    fast = RedisStore(url, "fenced")
    slow.acquire()
    assert slow.load().data is None
    time.sleep(0.3)  # the slow holder pauses past its lease
    fast.acquire()
    fast.save(b'{"successor": 1}')
    fast.release()
    with pytest.raises(LeaseExpiredError, match="nothing was written"):
        slow.save(b'{"stale": 1}')
    slow.release()
    assert admin.get("fenced") == b'{"successor": 1}'


def test_a_lock_held_elsewhere_times_out_clearly(url):
    """A writer waits at most lock_timeout, then LockTimeoutError names the store and holder."""
    holder = RedisStore(url, "busy")
    holder.acquire()
    waiter = RedisStore(url, "busy", lock_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as caught:
        waiter.acquire()
    assert 0.3 <= time.monotonic() - started < 2
    assert caught.value.holder_pid is not None  # same host: the holder's pid is known
    assert "busy" in str(caught.value)
    holder.release()
    waiter.acquire()
    waiter.release()


def test_new_errors_survive_pickling():
    """StoreUnavailableError and LeaseExpiredError cross process boundaries intact."""
    for error in (
        StoreUnavailableError("redis://h:1/0 key 'k'", "read", "refused"),
        LeaseExpiredError("redis://h:1/0 key 'k'", 2.5),
    ):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert vars(again) == vars(error)
    assert isinstance(StoreUnavailableError("s", "o", "r"), ConnectionError)
    assert isinstance(LeaseExpiredError("s", 1), TimeoutError)


def test_msal_sees_the_same_document_as_a_plain_cache(url, admin):
    """The key holds msal's own format: a plain SerializableTokenCache reads it."""
    authority, app, _ = _app(url)
    authority.sign_in(app)
    plain = msal.SerializableTokenCache()
    plain.deserialize(admin.get("cache").decode())
    other = authority.public_client(token_cache=plain)
    assert [a["username"] for a in other.get_accounts()] == [authority.username]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(documents=st.lists(st.binary(max_size=2048), min_size=1, max_size=4))
def test_what_is_saved_is_what_every_reader_loads(url, documents):
    """Any bytes saved under the lock are what a fresh store and the writer itself load."""
    writer = RedisStore(url, "round-trip")
    reader = RedisStore(redis.Redis.from_url(url, socket_timeout=5), "round-trip")
    for data in documents:
        writer.acquire()
        try:
            assert writer.load().data == (reader.load().data)
            writer.save(data)
        finally:
            writer.release()
        assert reader.load().data == data
        assert writer.load().data == data


def test_a_server_refusing_tracking_still_serves_fresh_reads(redis_server, url, admin, caplog):
    """An ACL user without CLIENT: one warning, no local copy, every read still correct."""
    admin.acl_setuser(
        "no-tracking",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        commands=["+@all", "-client", "-subscribe"],
    )
    try:
        limited = f"redis://no-tracking:pw@127.0.0.1:{redis_server.port}/0"
        with caplog.at_level(logging.WARNING, logger="msal_persist"):
            authority, app, store = _app(limited, "acl")
            authority.sign_in(app)
            wait_until(lambda: "refused client tracking" in caplog.text, what="the warning")
        assert ":pw@" not in caplog.text  # the URL's password never reaches a log line
        assert not store.local_copy
        account = app.get_accounts()[0]
        other = RedisStore(url, "acl")
        _, other_app, _ = _app(other, authority=authority)
        new = other_app.acquire_token_silent(
            DEFAULT_SCOPES, other_app.get_accounts()[0], force_refresh=True
        )
        assert (
            app.acquire_token_silent(DEFAULT_SCOPES, account)["access_token"] == new["access_token"]
        )
    finally:
        admin.acl_deluser("no-tracking")


def test_a_channel_no_store_uses_closes_with_its_thread(url, admin):
    """Channels of stores long gone close (their thread ends); the recent ones stay up."""
    store = RedisStore(url, "gone-soon", heartbeat=0.2)
    assert store.load().data is None
    ref = weakref.ref(store)
    wait_until(lambda: ref().local_copy, what="the invalidation channel")
    thread = store._tracker._thread
    assert thread is not None
    assert thread.is_alive()
    clients = len(admin.client_list(_type="pubsub"))
    for index in range(40):  # newer stores push it out of the recently used channels
        RedisStore(url, f"other-{index}")
    del store
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
    wait_until(
        lambda: len(admin.client_list(_type="pubsub")) == clients - 1,
        what="the server to see the channel closed",
    )
