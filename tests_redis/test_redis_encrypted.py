"""The encrypting codec on the Redis store: ciphertext in Redis, the same coherence and fencing."""

from __future__ import annotations

import os

import pytest
import redis

from msal_persist import DecryptionError, EncryptedCodec, PersistedTokenCache, RedisStore
from msal_persist._envelope import MAGIC
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from redis_helpers import wait_until


def _apps(url: str, key: bytes, *, context: str = "user-a"):
    authority = LocalAuthority(username="ada@example.test")
    a = RedisStore(url, "{enc}")
    b = RedisStore(redis.Redis.from_url(url, socket_timeout=5), "{enc}")  # another machine
    app_a = authority.public_client(
        PersistedTokenCache(store=a, codec=EncryptedCodec(key, context=context))
    )
    app_b = authority.public_client(
        PersistedTokenCache(store=b, codec=EncryptedCodec(key, context=context))
    )
    return authority, a, b, app_a, app_b


def test_redis_holds_only_ciphertext_and_hits_stay_local(url, admin):
    key = os.urandom(32)
    authority, _, b, app_a, app_b = _apps(url, key)
    authority.sign_in(app_a)
    stored = admin.get("{enc}")
    assert stored.startswith(MAGIC)
    assert b"ada@example.test" not in stored
    account_a, account_b = app_a.get_accounts()[0], app_b.get_accounts()[0]
    wait_until(lambda: b.local_copy, what="the invalidation channel")
    app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
    for _ in range(10):
        sent = b.round_trips
        hit = app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
        assert hit["token_source"] == "cache"
        assert b.round_trips == sent  # served locally: nothing fetched, nothing decrypted
        new = app_a.acquire_token_silent(DEFAULT_SCOPES, account_a, force_refresh=True)
        seen = app_b.acquire_token_silent(DEFAULT_SCOPES, account_b)
        assert seen["access_token"] == new["access_token"] != hit["access_token"]


@pytest.mark.parametrize("other", ["key", "context"])
def test_another_key_or_context_is_refused_and_nothing_is_set_aside(url, admin, other):
    key = os.urandom(32)
    authority, _, _, app_a, _ = _apps(url, key)
    authority.sign_in(app_a)
    before = admin.get("{enc}")
    wrong_key = os.urandom(32) if other == "key" else key
    context = "user-b" if other == "context" else "user-a"
    store = RedisStore(url, "{enc}")
    intruder = LocalAuthority().public_client(
        PersistedTokenCache(store=store, codec=EncryptedCodec(wrong_key, context=context))
    )
    with pytest.raises(DecryptionError) as caught:
        intruder.get_accounts()
    assert "{enc}" in caught.value.path
    with pytest.raises(DecryptionError):
        authority.sign_in(intruder, "eve@example.test")
    assert admin.get("{enc}") == before
    assert not admin.exists("{enc}:corrupt")
