"""The OS keyring for real: gnome-keyring's Secret Service on a private D-Bus session."""

from __future__ import annotations

import base64
import json
import os
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import keyring
import pytest
import secretstorage
from jeepney.io.blocking import open_dbus_connection

from conftest import start_secret_service
from msal_persist import KeyringKey, KeyUnavailableError, PersistedTokenCache
from msal_persist._keys import key_id_of
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority
from process_helpers import run_workers, worker

pytestmark = pytest.mark.usefixtures("secret_service")


@pytest.fixture
def name() -> str:
    """A key name of this test's own."""
    return f"test-{uuid.uuid4()}"


def _items(address: str, name: str) -> list[bytes]:
    connection = open_dbus_connection(address)
    try:
        collection = secretstorage.get_default_collection(connection)
        found = collection.search_items({"service": "msal-persist", "username": name})
        return [item.get_secret() for item in found]
    finally:
        connection.close()


def _sign_in(cache: PersistedTokenCache, username: str = "ada@example.test") -> None:
    authority = LocalAuthority(username=username)
    authority.sign_in(authority.public_client(token_cache=cache), username)


class CountingBackend:
    """The real backend, counting the reads (to prove one fetch per process)."""

    def __init__(self) -> None:
        self.real = keyring.get_keyring()
        self.reads = 0

    def get_password(self, service: str, name: str) -> Any:
        self.reads += 1
        return self.real.get_password(service, name)

    def set_password(self, service: str, name: str, value: str) -> None:
        self.real.set_password(service, name, value)


def test_the_backend_is_gnome_keyrings_secret_service(name: str) -> None:
    source = KeyringKey(name=name)
    assert "keyring.backends.SecretService.Keyring" in source.description


def test_a_key_is_made_on_the_first_write_and_only_the_key_is_stored(
    secret_service: str, cache_path: Path, name: str
) -> None:
    cache = PersistedTokenCache(cache_path, encryption=KeyringKey(name=name))
    assert _items(secret_service, name) == []
    _sign_in(cache)
    (stored,) = _items(secret_service, name)
    key = base64.b64decode(stored)
    assert len(stored) == 44  # base64 of 32 bytes: no token, no cache, nothing else
    assert len(key) == 32
    assert cache_path.read_bytes()[6:14] == key_id_of(key)
    assert cache.codec.key_id == key_id_of(key).hex()  # type: ignore[attr-defined]


def test_another_process_reads_the_cache_with_the_keyring_key(cache_path: Path, name: str) -> None:
    _sign_in(PersistedTokenCache(cache_path, encryption=f"keyring:{name}"))
    (report,) = [
        json.loads(out)
        for out in run_workers(
            [worker("keys", "sign_in", str(cache_path), f"keyring:{name}", "bob@example.test")]
        )
    ]
    assert report["accounts"] == 2, report
    app = LocalAuthority().public_client(
        token_cache=PersistedTokenCache(cache_path, encryption=KeyringKey(name=name))
    )
    assert {a["username"] for a in app.get_accounts()} == {"ada@example.test", "bob@example.test"}


def test_the_key_is_fetched_once_per_process(tmp_path: Path, name: str) -> None:
    backend = CountingBackend()
    for index in range(3):  # three caches of one process, sharing one key
        cache = PersistedTokenCache(
            tmp_path / f"cache{index}.json", encryption=KeyringKey(name=name, backend=backend)
        )
        authority = LocalAuthority()
        app = authority.public_client(token_cache=cache)
        authority.sign_in(app)
        account = app.get_accounts()[0]
        for _ in range(5):
            app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
            app.acquire_token_silent(DEFAULT_SCOPES, account)
    # One read that found nothing, one after storing the new key: then never again.
    assert backend.reads == 2


def test_eight_processes_writing_first_agree_on_one_key(
    secret_service: str, tmp_path: Path, cache_path: Path, name: str
) -> None:
    """The key is made under the cache's lock: racing first writers cannot make two."""
    parties = 8
    commands = [
        worker(
            "keys",
            "first_write",
            str(cache_path),
            f"keyring:{name}",
            f"user{i}@example.test",
            str(tmp_path / "barrier"),
            str(parties),
        )
        for i in range(parties)
    ]
    reports = [json.loads(out) for out in run_workers(commands)]
    assert all("error" not in r for r in reports), reports
    assert len(_items(secret_service, name)) == 1
    assert len({r["key_id"] for r in reports}) == 1
    app = LocalAuthority().public_client(
        token_cache=PersistedTokenCache(cache_path, encryption=KeyringKey(name=name))
    )
    assert len(app.get_accounts()) == parties


def test_an_item_that_holds_no_key_is_refused_and_kept(
    secret_service: str, cache_path: Path, name: str
) -> None:
    keyring.set_password("msal-persist", name, "my password")
    cache = PersistedTokenCache(cache_path, encryption=KeyringKey(name=name))
    with pytest.raises(KeyUnavailableError, match="does not hold a 32-byte key") as caught:
        _sign_in(cache)
    assert "my password" not in str(caught.value)
    assert _items(secret_service, name) == [b"my password"]
    assert not cache_path.exists()


def test_a_deleted_keyring_key_is_a_decryption_error_not_a_new_key(
    secret_service: str, cache_path: Path, name: str
) -> None:
    """A process that finds the cache sealed and no key in the keyring makes no new key."""
    _sign_in(PersistedTokenCache(cache_path, encryption=KeyringKey(name=name)))
    before = cache_path.read_bytes()
    keyring.delete_password("msal-persist", name)
    # Another process: this one remembers the key it used for the life of the process.
    (out,) = run_workers(
        [worker("keys", "sign_in", str(cache_path), f"keyring:{name}", "eve@example.test")]
    )
    report = json.loads(out)
    assert report["error"] == "DecryptionError", report
    assert "holds no key" in report["message"]
    assert before[6:14].hex() in report["message"]
    assert _items(secret_service, name) == []
    assert cache_path.read_bytes() == before


def test_no_secret_service_fails_at_construction_naming_both_ways_out(cache_path: Path) -> None:
    env = {"DBUS_SESSION_BUS_ADDRESS": f"unix:path={cache_path.parent}/no-bus"}
    command = worker("keys", "sign_in", str(cache_path), "keyring", "ada@example.test")
    report = json.loads(_run_with(command, env))
    assert report["error"] == "KeyUnavailableError", report
    message = report["message"]
    assert "keyring found no usable backend" in message
    assert "keyring.backends.fail.Keyring" in message
    assert "Secret Service" in message
    assert "--key env:VAR" in message
    assert not cache_path.exists()  # never a silent fallback to plaintext


def test_a_locked_keyring_is_a_clear_error(cache_path: Path) -> None:
    with ExitStack() as stack:
        address = start_secret_service(stack)
        connection = open_dbus_connection(address)
        try:
            secretstorage.get_default_collection(connection).lock()
        finally:
            connection.close()
        command = worker("keys", "sign_in", str(cache_path), "keyring", "ada@example.test")
        report = json.loads(_run_with(command, {"DBUS_SESSION_BUS_ADDRESS": address}))
    assert report["error"] == "KeyUnavailableError", report
    assert "KeyringLocked" in report["message"]
    assert "supply" in report["message"] or "give the key yourself" in report["message"]
    assert not cache_path.exists()


def _run_with(command: list[str], env: dict[str, str]) -> str:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        (output,) = run_workers([command])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return output
