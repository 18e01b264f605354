"""PersistedTokenCache driven by real msal applications against the local stand-in authority."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import msal
import pytest

from msal_persist import CacheFileError, PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from process_helpers import run_workers, running, stop, worker


def _app(cache: PersistedTokenCache, username: str = "ada@example.test") -> tuple:
    authority = LocalAuthority(username=username)
    return authority, authority.public_client(token_cache=cache)


def _signed_in(path: Path, username: str = "ada@example.test") -> tuple:
    cache = PersistedTokenCache(path)
    authority, app = _app(cache, username)
    authority.sign_in(app, username)
    return cache, authority, app


def _usernames(document: dict) -> set[str]:
    return {entry["username"] for entry in document.get("Account", {}).values()}


def test_is_an_msal_serializable_token_cache(cache_path: Path) -> None:
    """The cache is accepted wherever msal takes a SerializableTokenCache."""
    cache = PersistedTokenCache(cache_path)
    assert isinstance(cache, msal.SerializableTokenCache)
    assert repr(cache) == f"PersistedTokenCache({str(cache_path)!r})"
    assert cache.store.lock.path == Path(f"{cache_path}.lockfile")


def test_nothing_is_touched_until_msal_asks(cache_path: Path) -> None:
    """Constructing a cache creates no file and no directory."""
    PersistedTokenCache(cache_path)
    assert not cache_path.parent.exists()


def test_sign_in_is_one_lock_and_one_write(cache_path: Path) -> None:
    """A sign-in (msal's add() with five modify() calls) takes one lock and writes once."""
    cache, _, _ = _signed_in(cache_path)
    assert cache.store.saves == 1
    assert cache.store.lock.acquisitions == 1
    document = json.loads(cache_path.read_text())
    assert {len(document[s]) for s in ("AccessToken", "RefreshToken", "IdToken", "Account")} == {1}


def test_cache_hit_writes_nothing_and_takes_no_lock(cache_path: Path) -> None:
    """acquire_token_silent served from the cache neither locks nor writes."""
    cache, authority, app = _signed_in(cache_path)
    before = (cache.store.saves, cache.store.lock.acquisitions)
    authority.reset_counters()
    for _ in range(5):
        result = app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0])
        assert result["token_source"] == "cache"
    assert (cache.store.saves, cache.store.lock.acquisitions) == before
    assert authority.token_endpoint_hits == 0


def test_forced_refresh_is_one_lock_and_one_write(cache_path: Path) -> None:
    """A forced refresh (add() then update_rt()) takes one lock and writes once."""
    cache, _, app = _signed_in(cache_path)
    account = app.get_accounts()[0]
    for round_ in range(1, 6):
        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
        assert result["token_source"] == "identity_provider"
        assert (cache.store.saves, cache.store.lock.acquisitions) == (1 + round_, 1 + round_)
        document = json.loads(cache_path.read_text())
        (refresh_token,) = document["RefreshToken"].values()
        assert refresh_token["secret"] == result["refresh_token"]
        (access_token,) = document["AccessToken"].values()
        assert access_token["secret"] == result["access_token"]


def test_expired_token_refresh_is_one_write(cache_path: Path) -> None:
    """Refreshing an expired access token writes once: its removal rides along."""
    cache = PersistedTokenCache(cache_path)
    authority, app = _app(cache)
    authority.access_token_lifetime = -60  # already expired when stored
    authority.sign_in(app)
    saves = cache.store.saves
    result = app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0])
    assert result["token_source"] == "identity_provider"
    assert cache.store.saves == saves + 1


def test_other_instances_see_a_sign_in_at_once(cache_path: Path) -> None:
    """A second instance on the same file sees the first one's sign-in on its next read."""
    reader = PersistedTokenCache(cache_path)
    _, reader_app = _app(reader)
    assert reader_app.get_accounts() == []
    _signed_in(cache_path, "bob@example.test")
    assert [a["username"] for a in reader_app.get_accounts()] == ["bob@example.test"]


def test_every_msal_read_path_sees_fresh_data(cache_path: Path) -> None:
    """search, find, _get_access_token and _get_app_metadata all reload a changed file."""
    _, authority, _ = _signed_in(cache_path)
    for read in (
        lambda c: list(c.search(c.CredentialType.ACCOUNT)),
        lambda c: c._get_app_metadata(environment="login.microsoftonline.com", client_id=None),
        lambda c: c._get(c.CredentialType.ACCOUNT, "no-such-key"),
    ):
        cache = PersistedTokenCache(cache_path)
        read(cache)  # prime with the current file
        assert cache.store.loads == 1
        _signed_in(cache_path, "carol@example.test")
        read(cache)
        assert cache.store.loads == 2, "the read path did not reload a changed file"
        assert "carol@example.test" in {a["username"] for a in cache.search("Account")}
        PersistedTokenCache(cache_path).clear()
        _signed_in(cache_path)
    assert authority.token_endpoint_hits == 1


def test_unchanged_file_is_not_parsed_again(cache_path: Path) -> None:
    """Reads of an unchanged file reuse memory: one stat, no read, no parse."""
    cache, _, app = _signed_in(cache_path)
    loads = cache.store.loads
    for _ in range(10):
        app.get_accounts()
    assert cache.store.loads == loads


def test_no_lost_update_between_two_instances(cache_path: Path) -> None:
    """Two instances writing alternately keep both users' tokens (read-modify-write)."""
    first = PersistedTokenCache(cache_path)
    second = PersistedTokenCache(cache_path)
    auth_a, app_a = _app(first, "a@example.test")
    auth_b, app_b = _app(second, "b@example.test")
    auth_a.sign_in(app_a, "a@example.test")
    auth_b.sign_in(app_b, "b@example.test")
    last = app_a.acquire_token_silent(
        DEFAULT_SCOPES, app_a.get_accounts(username="a@example.test")[0], force_refresh=True
    )
    document = json.loads(cache_path.read_text())
    assert _usernames(document) == {"a@example.test", "b@example.test"}
    assert last["refresh_token"] in {rt["secret"] for rt in document["RefreshToken"].values()}


def test_deleted_file_means_empty_and_is_not_resurrected(cache_path: Path) -> None:
    """After another process deletes the file, reads are empty and writes do not restore it."""
    _, _, app = _signed_in(cache_path)
    cache_path.unlink()
    assert app.get_accounts() == []
    _signed_in(cache_path, "new@example.test")
    assert {a["username"] for a in app.get_accounts()} == {"new@example.test"}
    assert _usernames(json.loads(cache_path.read_text())) == {"new@example.test"}


def test_removal_of_nothing_on_a_missing_file_creates_no_file(cache_path: Path) -> None:
    """A no-op change with no file on disk does not create one."""
    cache = PersistedTokenCache(cache_path)
    cache.remove_rt({"credential_type": "RefreshToken", "home_account_id": "x", "secret": "s"})
    assert not cache_path.exists()
    assert cache.store.saves == 0


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'{"Account": []}', b"\xff\xfe"])
def test_bad_content_is_quarantined_and_the_app_keeps_working(
    cache_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that is not an msal cache is moved aside (bytes kept) and the cache starts empty."""
    cache_path.parent.mkdir()
    cache_path.write_bytes(content)
    cache = PersistedTokenCache(cache_path)
    authority, app = _app(cache)
    with caplog.at_level(logging.WARNING, logger="msal_persist"):
        assert app.get_accounts() == []
        authority.sign_in(app)
    (quarantined,) = cache_path.parent.glob("token_cache.json.corrupt-*")
    assert quarantined.read_bytes() == content
    assert [a["username"] for a in app.get_accounts()] == ["ada@example.test"]
    assert str(cache_path) in caplog.text
    assert "corrupt" in caplog.text


def test_bad_bytes_seen_without_the_lock_are_not_judged_until_the_writer_finishes(
    cache_path: Path,
) -> None:
    """Half-written bytes from a peer writing in place (under the lock) are never quarantined."""
    _signed_in(cache_path)
    good = cache_path.read_bytes()
    reader = PersistedTokenCache(cache_path)
    with running(worker("cache", "hold_lock", str(cache_path))) as holder:
        cache_path.write_bytes(good[: len(good) // 2])  # a peer truncated and is rewriting
        seen: list[list] = []
        thread = threading.Thread(target=lambda: seen.append(_app(reader)[1].get_accounts()))
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive(), "the reader should wait for the writer's lock"
        cache_path.write_bytes(good)
        assert holder.stdin is not None
        holder.stdin.close()
        thread.join(timeout=30)
        stop(holder)
    assert [a["username"] for a in seen[0]] == ["ada@example.test"]
    assert list(cache_path.parent.glob("*.corrupt-*")) == []


def test_read_only_file_serves_reads_and_refuses_writes(cache_path: Path) -> None:
    """A read-only cache file still serves tokens; a write raises CacheFileError naming it."""
    _signed_in(cache_path)
    before = cache_path.read_bytes()
    cache_path.chmod(0o400)
    fresh_cache = PersistedTokenCache(cache_path)
    _, fresh_app = _app(fresh_cache)
    account = fresh_app.get_accounts()[0]
    assert fresh_app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "cache"
    with pytest.raises(CacheFileError, match="read-only") as caught:
        fresh_app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
    assert caught.value.path == str(cache_path)
    assert cache_path.read_bytes() == before


def test_unwritable_location_fails_at_first_write(tmp_path: Path) -> None:
    """A cache whose parent is a regular file fails clearly at the first write, nothing else."""
    blocker = tmp_path / "blocker"
    blocker.write_text("keep")
    cache = PersistedTokenCache(blocker / "cache.json")
    authority, app = _app(cache)
    assert app.get_accounts() == []
    with pytest.raises(CacheFileError):
        authority.sign_in(app)
    assert blocker.read_text() == "keep"


def test_transaction_groups_several_msal_calls_into_one_write(cache_path: Path) -> None:
    """remove_account inside transaction() takes one lock and writes once."""
    cache, _, app = _signed_in(cache_path)
    saves, locks = cache.store.saves, cache.store.lock.acquisitions
    with cache.transaction():
        app.remove_account(app.get_accounts()[0])
    assert (cache.store.saves, cache.store.lock.acquisitions) == (saves + 1, locks + 1)
    assert app.get_accounts() == []


def test_failed_transaction_writes_nothing(cache_path: Path) -> None:
    """An exception inside transaction() discards its changes instead of writing half of them."""
    cache, _, app = _signed_in(cache_path)
    before = cache_path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"), cache.transaction():
        app.remove_account(app.get_accounts()[0])
        raise RuntimeError("boom")
    assert cache_path.read_bytes() == before
    assert len(app.get_accounts()) == 1


def test_deserialize_replaces_and_persists(cache_path: Path, tmp_path: Path) -> None:
    """deserialize() imports a document (e.g. an old recipe file) and writes it."""
    source, _, _ = _signed_in(tmp_path / "old.json", "old@example.test")
    cache = PersistedTokenCache(cache_path)
    cache.deserialize(source.serialize())
    assert _usernames(json.loads(cache_path.read_text())) == {"old@example.test"}
    with pytest.raises(ValueError, match="not an msal token cache"):
        cache.deserialize("[]")


def test_serialize_is_fresh_msal_format_and_keeps_pending_state(cache_path: Path) -> None:
    """serialize() returns msal's indent=4 document of the newest file content."""
    cache = PersistedTokenCache(cache_path)
    _signed_in(cache_path)
    text = cache.serialize()
    assert text == json.dumps(json.loads(cache_path.read_text()), indent=4)
    assert cache.has_state_changed is False


def test_clear_removes_every_account_for_every_process(cache_path: Path) -> None:
    """clear() deletes the file under the lock; other instances then read an empty cache."""
    _, _, app = _signed_in(cache_path)
    assert PersistedTokenCache(cache_path).clear() is True
    assert not cache_path.exists()
    assert app.get_accounts() == []
    assert PersistedTokenCache(cache_path).clear() is False


def test_file_is_written_private_and_exposure_is_warned(
    cache_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes create 0600 files; reading a group-readable cache logs a chmod hint once."""
    _signed_in(cache_path)
    assert cache_path.stat().st_mode & 0o777 == 0o600
    cache_path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="msal_persist"):
        _, app = _app(PersistedTokenCache(cache_path))
        app.get_accounts()
    assert "chmod 600" in caplog.text
    assert str(cache_path) in caplog.text


def test_no_secret_or_username_reaches_the_logs(
    cache_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Debug logs name paths and sizes but never a token, a username or a home account id."""
    with caplog.at_level(logging.DEBUG, logger="msal_persist"):
        cache, authority, app = _signed_in(cache_path, "secret.user@example.test")
        account = app.get_accounts()[0]
        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name == "msal_persist")
    assert str(cache_path) in ours
    for secret in (
        result["access_token"],
        result["refresh_token"],
        "secret.user",
        authority.home_account_id("secret.user@example.test"),
    ):
        assert secret not in ours
    assert cache.store.saves == 2


def test_confidential_client_shares_app_tokens_across_processes(cache_path: Path) -> None:
    """acquire_token_for_client in a second process is served from the first one's cache."""
    (first,) = run_workers([worker("cache", "client_credentials", str(cache_path))])
    (second,) = run_workers([worker("cache", "client_credentials", str(cache_path))])
    first_result, second_result = json.loads(first), json.loads(second)
    assert first_result["token_endpoint_hits"] == 1
    assert second_result["token_endpoint_hits"] == 0
    assert second_result["token_source"] == "cache"
    assert second_result["access_token"] == first_result["access_token"]


def test_sso_in_a_fresh_interpreter_needs_no_token_request(cache_path: Path) -> None:
    """Process A signs in; process B gets a token silently with zero token-endpoint hits."""
    _signed_in(cache_path, "sso@example.test")
    (output,) = run_workers([worker("cache", "silent", str(cache_path), "sso@example.test")])
    report = json.loads(output)
    assert report == {"accounts": 1, "token_source": "cache", "token_endpoint_hits": 0, "saves": 0}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_child_reads_fresh_and_writes_safely(cache_path: Path) -> None:
    """A child forked mid-transaction does not hold the lock and can use the cache at once."""
    cache, _, app = _signed_in(cache_path)
    read_end, write_end = os.pipe()
    with cache.transaction():
        pid = os.fork()
        if pid == 0:
            try:
                ok = not cache.store.lock.is_held and len(app.get_accounts()) == 1
                authority = LocalAuthority(username="child@example.test")
                child_app = authority.public_client(token_cache=cache)
                authority.sign_in(child_app, "child@example.test")
                os.write(write_end, b"ok" if ok else b"bad")
            finally:
                os._exit(0)
        # The child waits for our lock, which we hold until the end of this block.
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        assert report.read() == b"ok"
    os.waitpid(pid, 0)
    assert {a["username"] for a in app.get_accounts()} == {"ada@example.test", "child@example.test"}


def test_clear_does_not_keep_a_copy_of_a_corrupt_file(cache_path: Path) -> None:
    """clear() removes even a corrupt file without setting a copy aside (it may hold tokens)."""
    cache_path.parent.mkdir()
    cache_path.write_bytes(b'{"RefreshToken": {"k": {"secret": "rt"}}, broken')
    assert PersistedTokenCache(cache_path).clear() is True
    assert list(cache_path.parent.iterdir()) == []


def test_clear_refuses_a_read_only_file(cache_path: Path) -> None:
    """A cache file its owner made read-only is not deleted by clear()."""
    _signed_in(cache_path)
    cache_path.chmod(0o400)
    with pytest.raises(CacheFileError, match="read-only"):
        PersistedTokenCache(cache_path).clear()
    assert cache_path.exists()


def test_write_proves_unchanged_by_bytes_not_by_fingerprint(cache_path: Path) -> None:
    """A rewrite that keeps inode, size and mtime is still picked up before the next write."""
    _, authority, app = _signed_in(cache_path, "ab@example.test")
    app.get_accounts()  # memory now matches the file and its fingerprint
    original = cache_path.stat()
    # Another user of the same length, written in place, with the old mtime put back: the
    # stat fingerprint (device, inode, size, mtime) cannot tell the difference.
    other = PersistedTokenCache(cache_path.with_name("other.json"))
    authority.sign_in(authority.public_client(token_cache=other), "cd@example.test")
    replacement = cache_path.with_name("other.json").read_bytes()
    assert len(replacement) == original.st_size  # same-length usernames, same-length tokens
    with cache_path.open("r+b") as handle:
        handle.write(replacement)
    os.utime(cache_path, ns=(original.st_atime_ns, original.st_mtime_ns))
    assert cache_path.stat().st_ino == original.st_ino
    assert cache_path.stat().st_mtime_ns == original.st_mtime_ns

    authority.sign_in(app, "ef@example.test")  # a write: must build on the rewritten bytes

    assert _usernames(json.loads(cache_path.read_text())) == {"cd@example.test", "ef@example.test"}


def test_nested_transactions_join_the_outermost(cache_path: Path) -> None:
    """A transaction inside a transaction takes no second lock and writes once, at the end."""
    cache, authority, app = _signed_in(cache_path)
    saves, locks = cache.store.saves, cache.store.lock.acquisitions
    with cache.transaction():
        with cache.transaction():
            authority.sign_in(app, "inner@example.test")
        assert cache.store.saves == saves  # nothing written before the outer end
        authority.sign_in(app, "outer@example.test")
    assert (cache.store.saves, cache.store.lock.acquisitions) == (saves + 1, locks + 1)
    assert len(json.loads(cache_path.read_text())["Account"]) == 3


def test_bytes_that_become_a_document_under_the_lock_are_not_set_aside(cache_path: Path) -> None:
    """Unparsable bytes that a lock-ignoring writer completes within the settle time are kept."""
    _signed_in(cache_path, "kept@example.test")
    good = cache_path.read_bytes()
    cache_path.write_bytes(good[:10])  # an in-place writer (ignoring the lock) is mid-write
    finisher = threading.Timer(0.2, cache_path.write_bytes, args=(good,))
    finisher.start()
    try:
        _signed_in(cache_path, "new@example.test")
    finally:
        finisher.join()
    assert list(cache_path.parent.glob("*.corrupt-*")) == []
    assert _usernames(json.loads(cache_path.read_text())) == {
        "kept@example.test",
        "new@example.test",
    }


def test_flush_writes_a_refresh_whose_token_was_not_rotated(cache_path: Path) -> None:
    """A refresh answered without a new refresh token is written by flush() (and at exit)."""
    cache, _, app = _signed_in(cache_path)
    account = app.get_accounts()[0]
    event = {
        "client_id": "c",
        "scope": ["User.Read"],
        "token_endpoint": "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        "grant_type": "refresh_token",
        "environment": account["environment"],
        "response": {"access_token": "fresh-at", "expires_in": 3600},
        "data": {},
    }
    cache.add(event)  # msal would call update_rt() next; the authority sent no new one
    saves = cache.store.saves
    cache.flush()
    assert cache.store.saves == saves + 1
    assert "fresh-at" in cache_path.read_text()


def test_deserialize_of_nothing_empties_the_cache(cache_path: Path) -> None:
    """deserialize(None) or deserialize("") leaves an empty cache on disk, as msal's does."""
    cache, _, app = _signed_in(cache_path)
    cache.deserialize("")
    assert app.get_accounts() == []
    assert json.loads(cache_path.read_text()) == {}
