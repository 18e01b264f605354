"""The CLI on encrypted caches: --key for every reader, rotate-key, new-key, doctor's words."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from cli_helpers import doctor_checks, run
from msal_persist import PersistedTokenCache
from msal_persist._envelope import MAGIC
from msal_persist._keys import key_id_of
from msal_persist.testing import LocalAuthority


@pytest.fixture
def encrypted(cache_path: Path, key_in_env: bytes) -> Path:
    """A cache encrypted with ``key_in_env`` ($MSAL_PERSIST_KEY), holding ada and bob."""
    assert key_in_env
    cache = PersistedTokenCache(cache_path, encryption="env:MSAL_PERSIST_KEY")
    for username in ("ada@example.test", "bob@example.test"):
        authority = LocalAuthority(username=username)
        authority.sign_in(authority.public_client(token_cache=cache), username)
    return cache_path


def _other_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    other = bytes(range(32))
    monkeypatch.setenv("OTHER_KEY", base64.b64encode(other).decode())
    return other


def test_show_needs_the_key_and_names_the_one_it_needs(
    capsys: pytest.CaptureFixture[str], encrypted: Path, key_in_env: bytes
) -> None:
    before = encrypted.read_bytes()
    code, out, err = run(capsys, "show", str(encrypted))
    assert code == 7
    assert out == ""
    assert str(encrypted) in err
    assert key_id_of(key_in_env).hex() in err
    code, out, _ = run(capsys, "show", str(encrypted), "--key", "env:MSAL_PERSIST_KEY")
    assert code == 0
    assert "ada@example.test" in out
    assert "bob@example.test" in out
    assert encrypted.read_bytes() == before


def test_show_with_the_wrong_key_exits_7(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, encrypted: Path
) -> None:
    other = _other_key(monkeypatch)
    code, _, err = run(capsys, "show", str(encrypted), "--key", "env:OTHER_KEY")
    assert code == 7
    assert key_id_of(other).hex() in err


def test_doctor_explains_an_encrypted_cache(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    encrypted: Path,
    key_in_env: bytes,
) -> None:
    key_id = key_id_of(key_in_env).hex()
    code, out, _ = run(capsys, "doctor", str(encrypted))
    checks = doctor_checks(out)
    assert code == 1
    assert checks["encryption"].startswith(f"FAIL encrypted (AES-256-GCM) with key {key_id}")
    assert "no --key was given" in checks["encryption"]
    assert "--key keyring|keyring:NAME|env:VARIABLE|file:PATH" in checks["encryption"]

    code, out, _ = run(capsys, "doctor", str(encrypted), "--key", "env:MSAL_PERSIST_KEY")
    checks = doctor_checks(out)
    assert checks["encryption"] == (
        f"OK AES-256-GCM, key {key_id} from environment variable MSAL_PERSIST_KEY"
    )
    assert checks["content"].startswith("OK a valid msal token cache: 2 accounts")

    other = _other_key(monkeypatch)
    code, out, _ = run(capsys, "doctor", str(encrypted), "--key", "env:OTHER_KEY")
    checks = doctor_checks(out)
    assert code == 1
    assert key_id in checks["encryption"]
    assert key_id_of(other).hex() in checks["encryption"]
    assert "msal-persist clear" in checks["encryption"]  # what a lost key means

    code, out, _ = run(capsys, "doctor", str(encrypted), "--key", "env:UNSET_VARIABLE")
    checks = doctor_checks(out)
    assert checks["encryption"].startswith("FAIL environment variable UNSET_VARIABLE")


@pytest.mark.usefixtures("key_in_env")
def test_doctor_warns_of_a_plaintext_cache_when_a_key_is_given(
    capsys: pytest.CaptureFixture[str], cache_path: Path
) -> None:
    authority = LocalAuthority()
    authority.sign_in(authority.public_client(token_cache=PersistedTokenCache(cache_path)))
    _, out, _ = run(capsys, "doctor", str(cache_path), "--key", "env:MSAL_PERSIST_KEY")
    assert doctor_checks(out)["encryption"].startswith("WARN not encrypted yet")


def test_clear_needs_no_key(capsys: pytest.CaptureFixture[str], encrypted: Path) -> None:
    code, out, _ = run(capsys, "clear", str(encrypted), "--yes")
    assert code == 0
    assert "encrypted with key" in out
    assert not encrypted.exists()


def test_remove_with_the_key_keeps_the_cache_encrypted(
    capsys: pytest.CaptureFixture[str], encrypted: Path
) -> None:
    code, _, _ = run(capsys, "remove", "ada@example.test", str(encrypted), "--yes")
    assert code == 7  # never decided on a cache it cannot read
    code, out, _ = run(
        capsys,
        "remove",
        "ada@example.test",
        str(encrypted),
        "--yes",
        "--key",
        "env:MSAL_PERSIST_KEY",
    )
    assert code == 0, out
    assert encrypted.read_bytes().startswith(MAGIC)
    cache = PersistedTokenCache(encrypted, encryption="env:MSAL_PERSIST_KEY")
    app = LocalAuthority().public_client(token_cache=cache)
    assert [a["username"] for a in app.get_accounts()] == ["bob@example.test"]


@pytest.mark.usefixtures("secret_service")
def test_rotate_key_to_another_key_to_the_keyring_and_to_plaintext(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, encrypted: Path
) -> None:
    other = _other_key(monkeypatch)
    common = ["--yes", "--key", "env:MSAL_PERSIST_KEY"]
    code, out, _ = run(capsys, "rotate-key", str(encrypted), "--to", "env:OTHER_KEY", *common)
    assert code == 0, out
    assert f"under key {key_id_of(other).hex()}" in out
    assert run(capsys, "show", str(encrypted), "--key", "env:MSAL_PERSIST_KEY")[0] == 7
    assert run(capsys, "show", str(encrypted), "--key", "env:OTHER_KEY")[0] == 0

    name = f"cli-{uuid.uuid4()}"
    code, out, _ = run(
        capsys, "rotate-key", str(encrypted), "--to", f"keyring:{name}", "--yes",
        "--key", "env:OTHER_KEY",
    )  # fmt: skip
    assert code == 0, out
    code, out, _ = run(capsys, "show", str(encrypted), "--key", f"keyring:{name}")
    assert code == 0
    assert "bob@example.test" in out

    code, out, _ = run(
        capsys, "rotate-key", str(encrypted), "--to", "none", "--yes", "--key", f"keyring:{name}"
    )
    assert code == 0
    assert "in plaintext" in out
    assert len(json.loads(encrypted.read_bytes())["Account"]) == 2


def test_new_key_prints_a_fresh_32_byte_key(capsys: pytest.CaptureFixture[str]) -> None:
    keys = set()
    for _ in range(3):
        code, out, _ = run(capsys, "new-key")
        assert code == 0
        keys.add(out.strip())
    assert len(keys) == 3
    assert all(len(base64.b64decode(k)) == 32 for k in keys)


@pytest.mark.parametrize("spec", ["hunter2", "env:", "file:", "keyring:", "aes:abc"])
def test_a_malformed_key_option_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], cache_path: Path, spec: str
) -> None:
    code, _, err = run(capsys, "show", str(cache_path), "--key", spec)
    assert code == 2
    assert "keyring, keyring:NAME, env:VARIABLE or file:PATH" in err
