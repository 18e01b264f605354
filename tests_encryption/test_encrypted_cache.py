"""An encrypted cache with real msal applications: the envelope, tampering, keys from the app."""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from msal_persist import (
    DecryptionError,
    EncryptedCodec,
    EnvironmentKey,
    FileKey,
    KeyUnavailableError,
    PersistedTokenCache,
    RawKey,
)
from msal_persist._envelope import HEADER_SIZE, MAGIC, NONCE_SIZE, TAG_SIZE
from msal_persist._keys import key_id_of
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority


def _sign_in(cache: PersistedTokenCache, username: str = "ada@example.test") -> LocalAuthority:
    authority = LocalAuthority(username=username)
    authority.sign_in(authority.public_client(token_cache=cache), username)
    return authority


def _usernames(cache: PersistedTokenCache) -> set[str]:
    app = LocalAuthority().public_client(token_cache=cache)
    return {account["username"] for account in app.get_accounts()}


def _directory(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def test_the_file_is_an_envelope_that_only_the_key_opens(cache_path: Path, key: bytes) -> None:
    _sign_in(PersistedTokenCache(cache_path, encryption=key))
    data = cache_path.read_bytes()
    assert data.startswith(MAGIC)
    assert data[4:6] == b"\x01\x01"  # format 1, AES-256-GCM
    assert data[6:14] == key_id_of(key)
    assert b"ada@example.test" not in data
    assert b"secret" not in data
    # The header is authenticated: AES-GCM opens the rest with it as associated data.
    nonce = data[14:HEADER_SIZE]
    document = AESGCM(key).decrypt(nonce, data[HEADER_SIZE:], data[:HEADER_SIZE])
    assert "Account" in json.loads(document)
    assert _usernames(PersistedTokenCache(cache_path, encryption=RawKey(key))) == {
        "ada@example.test"
    }


def test_every_write_draws_a_fresh_nonce(cache_path: Path, key: bytes) -> None:
    cache = PersistedTokenCache(cache_path, encryption=key)
    authority = _sign_in(cache)
    app = authority.public_client(token_cache=cache)
    account = app.get_accounts()[0]
    nonces = set()
    for _ in range(20):
        app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
        nonces.add(cache_path.read_bytes()[14:HEADER_SIZE])
    assert len(nonces) == 20
    assert all(len(nonce) == NONCE_SIZE for nonce in nonces)


def test_one_write_per_acquisition_and_none_for_a_hit(cache_path: Path, key: bytes) -> None:
    cache = PersistedTokenCache(cache_path, encryption=key)
    authority = _sign_in(cache)
    assert cache.store.saves == 1
    app = authority.public_client(token_cache=cache)
    account = app.get_accounts()[0]
    for _ in range(5):
        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
        assert result is not None
    assert cache.store.saves == 6
    loads = cache.store.loads
    for _ in range(50):
        result = app.acquire_token_silent(DEFAULT_SCOPES, account)
        assert result is not None
        assert result["token_source"] == "cache"
    assert cache.store.saves == 6
    assert cache.store.loads == loads  # a hit reads (and decrypts) nothing


# -- tampering: a distinct error, and the file left exactly as it was ----------------------

FIELDS = {
    "magic": 1,
    "version": 4,
    "algorithm": 5,
    "key id": 9,
    "nonce": 20,
    "ciphertext": HEADER_SIZE + 10,
    "tag": -3,
}


@pytest.mark.parametrize("where", FIELDS.values(), ids=FIELDS.keys())
def test_one_flipped_byte_anywhere_is_refused_and_left_alone(
    cache_path: Path, key: bytes, where: int
) -> None:
    _sign_in(PersistedTokenCache(cache_path, encryption=key))
    data = bytearray(cache_path.read_bytes())
    data[where] ^= 0x01
    cache_path.write_bytes(bytes(data))
    before = _directory(cache_path)

    cache = PersistedTokenCache(cache_path, encryption=key)
    with pytest.raises(DecryptionError) as caught:
        _usernames(cache)
    error = caught.value
    assert error.path == str(cache_path)
    assert str(cache_path) in str(error)
    if where != FIELDS["magic"]:
        assert error.key_id is not None
        assert error.key_id in str(error)
    # A write attempt (a sign-in) is refused too: nothing is moved, rewritten or deleted.
    with pytest.raises(DecryptionError):
        _sign_in(cache, "eve@example.test")
    assert _directory(cache_path) == before


@pytest.mark.parametrize("keep", [0, 5, HEADER_SIZE, HEADER_SIZE + TAG_SIZE - 1, -1])
def test_a_truncated_envelope_is_refused_and_left_alone(
    cache_path: Path, key: bytes, keep: int
) -> None:
    _sign_in(PersistedTokenCache(cache_path, encryption=key))
    data = cache_path.read_bytes()[:keep] if keep else MAGIC
    cache_path.write_bytes(data)
    before = _directory(cache_path)
    with pytest.raises(DecryptionError):
        _usernames(PersistedTokenCache(cache_path, encryption=key))
    assert _directory(cache_path) == before


def test_another_caches_envelope_is_refused(tmp_path: Path, key: bytes) -> None:
    """Caches sharing a key are told apart by their context; other keys by their key id."""
    mine = tmp_path / "mine.json"
    theirs = tmp_path / "theirs.json"
    other_key = tmp_path / "other-key.json"
    _sign_in(PersistedTokenCache(mine, codec=EncryptedCodec(key, context="user-a")), "a@x.test")
    _sign_in(PersistedTokenCache(theirs, codec=EncryptedCodec(key, context="user-b")), "b@x.test")
    _sign_in(PersistedTokenCache(other_key, encryption=os.urandom(32)), "c@x.test")
    for intruder in (theirs, other_key):
        mine.write_bytes(intruder.read_bytes())
        before = mine.read_bytes()
        cache = PersistedTokenCache(mine, codec=EncryptedCodec(key, context="user-a"))
        with pytest.raises(DecryptionError):
            _usernames(cache)
        assert mine.read_bytes() == before


def test_a_wrong_key_names_both_key_ids(cache_path: Path, key: bytes) -> None:
    _sign_in(PersistedTokenCache(cache_path, encryption=key))
    before = _directory(cache_path)
    other = os.urandom(32)
    with pytest.raises(DecryptionError) as caught:
        _usernames(PersistedTokenCache(cache_path, encryption=other))
    assert caught.value.key_id == key_id_of(key).hex()
    assert caught.value.expected_key_id == key_id_of(other).hex()
    assert key_id_of(key).hex() in str(caught.value)
    assert _directory(cache_path) == before


def test_an_encrypted_cache_opened_without_a_key_is_not_corrupt(
    cache_path: Path, key: bytes
) -> None:
    _sign_in(PersistedTokenCache(cache_path, encryption=key))
    before = _directory(cache_path)
    plain = PersistedTokenCache(cache_path)
    with pytest.raises(DecryptionError, match="opened without a key") as caught:
        _usernames(plain)
    assert caught.value.key_id == key_id_of(key).hex()
    with pytest.raises(DecryptionError):
        _sign_in(plain, "eve@example.test")
    assert _directory(cache_path) == before  # never set aside as "not a cache"


# -- migration both ways, and rotation -------------------------------------------------


def test_a_plaintext_cache_is_read_and_encrypted_at_its_next_write(
    cache_path: Path, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    _sign_in(PersistedTokenCache(cache_path))
    assert cache_path.read_bytes().startswith(b"{")
    cache = PersistedTokenCache(cache_path, encryption=key)
    with caplog.at_level(logging.WARNING, logger="msal_persist"):
        assert _usernames(cache) == {"ada@example.test"}
        assert _usernames(cache) == {"ada@example.test"}
    assert [r.message for r in caplog.records].count(
        "the token cache is not encrypted yet: it is read as it is, and its next write encrypts it"
    ) == 1
    assert cache_path.read_bytes().startswith(b"{")  # reading alone writes nothing
    _sign_in(cache, "bob@example.test")
    assert cache_path.read_bytes().startswith(MAGIC)
    assert _usernames(PersistedTokenCache(cache_path, encryption=key)) == {
        "ada@example.test",
        "bob@example.test",
    }


def test_reencrypt_rotates_the_key_and_back_to_plaintext(tmp_path: Path, key: bytes) -> None:
    cache_path = tmp_path / "cache.json"
    cache = PersistedTokenCache(cache_path, encryption=key)
    _sign_in(cache)
    new_key = os.urandom(32)
    cache.reencrypt(new_key)
    assert cache_path.read_bytes()[6:14] == key_id_of(new_key)
    assert _usernames(PersistedTokenCache(cache_path, encryption=new_key)) == {"ada@example.test"}
    with pytest.raises(DecryptionError):
        _usernames(PersistedTokenCache(cache_path, encryption=key))
    _sign_in(cache, "bob@example.test")  # the instance goes on with the new key
    assert cache_path.read_bytes()[6:14] == key_id_of(new_key)
    cache.reencrypt(None)
    assert json.loads(cache_path.read_bytes())["Account"]
    assert _usernames(PersistedTokenCache(cache_path)) == {
        "ada@example.test",
        "bob@example.test",
    }


def test_a_rotated_key_file_is_read_again(tmp_path: Path, key: bytes) -> None:
    """A mounted secret replaced by a rotation: a running reader follows without a restart."""
    key_file = tmp_path / "key"
    key_file.write_text(base64.b64encode(key).decode() + "\n")
    cache_path = tmp_path / "cache.json"
    reader = PersistedTokenCache(cache_path, encryption=FileKey(key_file))
    writer = PersistedTokenCache(cache_path, encryption=FileKey(key_file))
    _sign_in(writer)
    assert _usernames(reader) == {"ada@example.test"}
    new_key = os.urandom(32)
    writer.reencrypt(new_key)
    key_file.write_text(new_key.hex())
    _sign_in(writer, "bob@example.test")
    assert _usernames(reader) == {"ada@example.test", "bob@example.test"}


# -- keys the application supplies -------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        lambda k: base64.b64encode(k).decode(),
        lambda k: base64.urlsafe_b64encode(k).decode().rstrip("="),
        lambda k: k.hex(),
        lambda k: f"  {k.hex().upper()}\n",
    ],
    ids=["base64", "urlsafe-unpadded", "hex", "hex-upper-spaced"],
)
def test_key_text_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key: bytes, text) -> None:
    monkeypatch.setenv("APP_KEY", text(key))
    assert EnvironmentKey("APP_KEY").fetch(create=False) == key
    (tmp_path / "k").write_text(text(key))
    assert FileKey(tmp_path / "k").fetch(create=False) == key


def test_a_key_file_may_hold_raw_bytes_and_be_a_symlink(tmp_path: Path, key: bytes) -> None:
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "key").write_bytes(key)
    (tmp_path / "key").symlink_to(tmp_path / "..data" / "key")  # how Kubernetes mounts it
    assert FileKey(tmp_path / "key").fetch(create=False) == key


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "it is not set"),
        ("", "it is not set"),
        ("c2hvcnQ=", "does not hold a 32-byte key"),
        ("z" * 64, "does not hold a 32-byte key"),
    ],
)
def test_a_bad_environment_key_says_what_and_where(
    monkeypatch: pytest.MonkeyPatch, cache_path: Path, value: str | None, problem: str
) -> None:
    if value is None:
        monkeypatch.delenv("APP_KEY", raising=False)
    else:
        monkeypatch.setenv("APP_KEY", value)
    cache = PersistedTokenCache(cache_path, encryption="env:APP_KEY")
    with pytest.raises(KeyUnavailableError, match=problem) as caught:
        _sign_in(cache)
    assert caught.value.source == "environment variable APP_KEY"
    assert "msal-persist new-key" in str(caught.value)
    if value:
        assert value not in str(caught.value)
    assert not cache_path.exists()  # never a silent fallback to plaintext


def test_a_missing_or_odd_key_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(KeyUnavailableError, match="No such file"):
        FileKey(tmp_path / "absent").fetch(create=False)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(KeyUnavailableError, match="FIFO"):
        FileKey(tmp_path / "fifo").fetch(create=False)
    (tmp_path / "big").write_bytes(b"A" * 10_000)
    with pytest.raises(KeyUnavailableError, match="too large"):
        FileKey(tmp_path / "big").fetch(create=False)


def test_bad_arguments_are_refused_at_once(cache_path: Path, key: bytes) -> None:
    with pytest.raises(KeyUnavailableError, match="32 bytes"):
        RawKey(b"short")
    with pytest.raises(KeyUnavailableError, match="32 bytes"):
        RawKey(key.hex())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a key source"):
        PersistedTokenCache(cache_path, encryption="hunter2")
    with pytest.raises(TypeError, match="either codec or encryption"):
        PersistedTokenCache(cache_path, encryption=key, codec=EncryptedCodec(key))
    with pytest.raises(ValueError, match="not an environment variable"):
        EnvironmentKey("A=B")


# -- no key byte anywhere -----------------------------------------------------------------


def _forms(key: bytes) -> list[bytes]:
    forms = [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        base64.b64encode(key),
        base64.urlsafe_b64encode(key),
    ]
    return [*forms, *(f.rstrip(b"=") for f in forms)]


def test_no_key_byte_reaches_a_file_a_log_a_repr_or_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(32)
    monkeypatch.setenv("APP_KEY", base64.b64encode(key).decode())
    cache_path = tmp_path / "cache" / "token_cache.json"
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for source in (RawKey(key), EnvironmentKey("APP_KEY"), key, "env:APP_KEY"):
            cache = PersistedTokenCache(cache_path, encryption=source)
            _sign_in(cache, f"user{len(seen)}@example.test")
            seen += [repr(cache), repr(cache.codec), repr(cache.codec.source)]  # type: ignore[attr-defined]
        cache.reencrypt(os.urandom(32))
        for error_source in (key, None):
            try:
                _usernames(PersistedTokenCache(cache_path, encryption=error_source))
            except DecryptionError as error:
                seen += [str(error), repr(error), repr(error.args)]
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(RawKey(key))
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(EncryptedCodec(key))
    seen += [record.getMessage() for record in caplog.records]
    text = "\n".join(seen).encode()
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for form in _forms(key):
        assert form not in text
        assert form not in files
