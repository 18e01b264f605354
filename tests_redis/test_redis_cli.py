"""The command line tool on a cache kept in Redis: show, doctor, clear, remove."""

from __future__ import annotations

import json

from cli_helpers import doctor_checks, run
from msal_persist import PersistedTokenCache, RedisStore
from msal_persist._cli import ExitCode
from msal_persist.testing import LocalAuthority
from redis_helpers import free_port


def _signed_in(url, *usernames):
    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(store=RedisStore(url, "k")))
    for username in usernames:
        authority.sign_in(app, username)
    return authority


def test_show_lists_accounts_never_secrets(url, admin, capsys):
    """Show --redis: the accounts and tokens of the key, no secret printed."""
    _signed_in(url, "ada@example.test")
    code, out, _ = run(capsys, "show", "--redis", url, "--redis-key", "k")
    assert code == ExitCode.OK
    assert "ada@example.test" in out
    assert f"cache: redis://127.0.0.1:{url.split(':')[2]} key 'k'" in out
    secrets = [e["secret"] for e in json.loads(admin.get("k"))["RefreshToken"].values()]
    assert not any(secret in out for secret in secrets)
    code, out, _ = run(capsys, "show", "--json", "--redis", url, "--redis-key", "k")
    assert code == ExitCode.OK
    assert [a["username"] for a in json.loads(out)["accounts"]] == ["ada@example.test"]


def test_show_of_a_missing_key_and_a_missing_server(url, capsys):
    """No such key: exit 3; no server: exit 4 with the server's name; options go together."""
    code, _, err = run(capsys, "show", "--redis", url, "--redis-key", "absent")
    assert code == ExitCode.NO_CACHE
    assert "no such key" in err
    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, _, err = run(capsys, "show", "--redis", dead, "--redis-key", "k")
    assert code == ExitCode.UNREADABLE
    assert "did not answer" in err
    assert run(capsys, "show", "--redis", url)[0] == ExitCode.USAGE
    assert run(capsys, "show", "some/path", "--redis", url, "--redis-key", "k")[0] == ExitCode.USAGE


def test_doctor_checks_server_key_content_lock(url, capsys):
    """Doctor --redis: server, persistence, content, expiry, lock and set-aside copies."""
    _signed_in(url, "ada@example.test")
    code, out, _ = run(capsys, "doctor", "--redis", url, "--redis-key", "k")
    checks = doctor_checks(out)
    assert code == ExitCode.OK, out
    assert checks["server"].startswith("OK")
    assert checks["persistence"].startswith("WARN")  # the test server keeps nothing on disk
    assert checks["content"].startswith("OK")
    assert checks["lock"] == "OK not held"
    holder = RedisStore(url, "k")
    holder.acquire()
    try:
        code, out, _ = run(capsys, "doctor", "--redis", url, "--redis-key", "k")
    finally:
        holder.release()
    assert doctor_checks(out)["lock"].startswith("WARN held by")


def test_doctor_fails_on_a_dead_server(capsys):
    """Doctor --redis on a port nothing listens on: one FAIL with a fix, exit 1."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    code, out, _ = run(capsys, "doctor", "--redis", dead, "--redis-key", "k")
    assert code == ExitCode.FAILED
    assert doctor_checks(out)["server"].startswith("FAIL")


def test_clear_and_remove(url, admin, capsys):
    """Remove takes one account out in one write; clear deletes the key."""
    authority = _signed_in(url, "ada@example.test", "bob@example.test")
    code, out, _ = run(
        capsys, "remove", "ada@example.test", "--yes", "--redis", url, "--redis-key", "k"
    )
    assert code == ExitCode.OK, out
    left = json.loads(admin.get("k"))
    assert {a["username"] for a in left["Account"].values()} == {"bob@example.test"}
    assert authority.home_account_id("ada@example.test") not in admin.get("k").decode()
    code, _, _ = run(capsys, "remove", "nobody", "--yes", "--redis", url, "--redis-key", "k")
    assert code == ExitCode.NO_ACCOUNT
    code, out, _ = run(capsys, "clear", "--yes", "--redis", url, "--redis-key", "k")
    assert code == ExitCode.OK
    assert "cleared" in out
    assert not admin.exists("k")
