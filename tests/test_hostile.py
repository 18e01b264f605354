"""Hostile or odd file-system objects: never hang, never follow a link, never lose a token."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from msal_persist import CacheFileError, CrossProcessLock, PersistedTokenCache
from msal_persist._persistence import MAX_SET_ASIDE
from msal_persist._waiting import MAX_PLACE, Ticket
from process_helpers import start, stop, worker, worker_env

DOCUMENT = {"AppMetadata": {"appmetadata-h-c": {"client_id": "c", "environment": "h"}}}


def _write(cache: PersistedTokenCache, name: str = "x") -> None:
    with cache.transaction():
        cache._cache.setdefault("Extra", {})[name] = {"n": name}
        cache.has_state_changed = True


def _victim(tmp_path: Path) -> tuple[Path, bytes, int]:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    return victim, victim.read_bytes(), victim.stat().st_mtime_ns


@pytest.mark.parametrize("target", ["dangling", "victim"])
def test_symlink_at_the_lock_path_is_refused_at_once_and_never_written(
    cache_path: Path, tmp_path: Path, target: str
) -> None:
    """A lock path planted as a link fails at once with a clear error; its target is untouched."""
    victim, content, mtime = _victim(tmp_path)
    cache_path.parent.mkdir()
    lock_path = Path(f"{cache_path}.lockfile")
    lock_path.symlink_to(tmp_path / "nowhere" if target == "dangling" else victim)
    cache = PersistedTokenCache(cache_path, lock_timeout=None)  # must not wait for ever
    started = time.monotonic()
    with pytest.raises(CacheFileError, match="symbolic link, which no MSAL tool creates"):
        _write(cache)
    assert time.monotonic() - started < 5
    assert (victim.read_bytes(), victim.stat().st_mtime_ns) == (content, mtime)
    assert lock_path.is_symlink()


def test_hard_link_at_the_lock_path_never_gets_a_waiter_mark(tmp_path: Path) -> None:
    """A lock file that is another name of the victim's file is refused, not appended to."""
    victim, content, _ = _victim(tmp_path)
    lock_path = tmp_path / "token_cache.json.lockfile"
    os.link(victim, lock_path)
    with pytest.raises(CacheFileError, match="2 names"):
        CrossProcessLock(lock_path, timeout=None).acquire()
    ticket = Ticket(time.monotonic_ns())
    ticket.hand_in(lock_path)
    ticket.close()
    assert victim.read_bytes() == content


@pytest.mark.parametrize("where", ["lock", "cache"])
def test_fifo_at_either_path_never_blocks(cache_path: Path, where: str) -> None:
    """A FIFO at the lock or cache path is reported, never opened in a way that blocks."""
    cache_path.parent.mkdir()
    fifo = Path(f"{cache_path}.lockfile") if where == "lock" else cache_path
    os.mkfifo(fifo)
    cache = PersistedTokenCache(cache_path, lock_timeout=None)
    with pytest.raises(CacheFileError, match="FIFO"):
        _write(cache)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_symlinked_cache_file_is_neither_read_nor_replaced(
    cache_path: Path, tmp_path: Path
) -> None:
    """A cache path that is a link is an error; the link and its target stay as they are."""
    target = tmp_path / "real.json"
    target.write_text(json.dumps(DOCUMENT))
    cache_path.parent.mkdir()
    cache_path.symlink_to(target)
    cache = PersistedTokenCache(cache_path)
    with pytest.raises(CacheFileError, match="neither reads nor writes through links"):
        list(cache.search("AppMetadata"))
    with pytest.raises(CacheFileError, match="symbolic link"):
        _write(cache)
    assert cache_path.is_symlink()
    assert json.loads(target.read_text()) == DOCUMENT


def test_hard_linked_cache_file_is_used_with_a_warning(
    cache_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache file with two names is read and written; the log says the other name is left."""
    cache_path.parent.mkdir()
    cache_path.write_text(json.dumps(DOCUMENT))
    other = tmp_path / "other-name.json"
    os.link(cache_path, other)
    cache = PersistedTokenCache(cache_path)
    with caplog.at_level("WARNING", logger="msal_persist"):
        _write(cache)
    assert "2 names (hard links)" in caplog.text
    assert "Extra" in json.loads(cache_path.read_text())
    assert json.loads(other.read_text()) == DOCUMENT


@pytest.mark.parametrize("umask", [0o277, 0o222, 0o000])
def test_modes_are_set_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    """Files come out 0600 and new directories 0700 under any umask; writes keep working."""
    path = tmp_path / "a" / "b" / "token_cache.json"
    old = os.umask(umask)
    try:
        cache = PersistedTokenCache(path)
        _write(cache, "one")
        _write(PersistedTokenCache(path), "two")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {stat.S_IMODE(p.stat().st_mode) for p in (path.parent, path.parent.parent)} == {0o700}
    assert set(json.loads(path.read_text())["Extra"]) == {"one", "two"}


def test_huge_lock_file_is_read_only_as_far_as_its_format_needs(tmp_path: Path) -> None:
    """A 3 GiB sparse lock file costs the holder-pid look-up a few bytes, not gigabytes."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    with lock_path.open("wb") as sparse:
        sparse.write(b"123 x")
        sparse.truncate(3 << 30)
    tracemalloc.start()
    try:
        pid = CrossProcessLock(lock_path).holder_pid()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pid == 123
    assert peak < 1 << 20


def test_flood_of_waiter_marks_does_not_stretch_a_wait(tmp_path: Path) -> None:
    """Thousands of early marks in a lock file put a waiter at most a few places back."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    lock_path.write_bytes(b"1 x" + b"+1" * 50_000)
    ticket = Ticket(time.monotonic_ns())
    ticket._fd = os.open(lock_path, os.O_RDONLY)
    try:
        assert ticket.place() == MAX_PLACE
    finally:
        ticket.close()


def test_changing_lock_file_of_a_live_pid_without_os_lock_is_broken_after_grace(
    tmp_path: Path,
) -> None:
    """Content that keeps changing does not keep an unlocked lock file alive for ever."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    sleeper = start(worker("lock", "sleep", "60"))
    halt = threading.Event()

    def churn() -> None:
        n = 0
        while not halt.is_set():
            n += 1
            try:
                fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
            except OSError:
                continue
            os.write(fd, f"{sleeper.pid} tool-{n}".encode())
            os.close(fd)
            time.sleep(0.05)

    lock_path.write_text(f"{sleeper.pid} tool-0")
    writer = threading.Thread(target=churn)
    writer.start()
    try:
        lock = CrossProcessLock(lock_path, timeout=8, stale_grace=1.0)
        lock.acquire()
        assert lock.broken >= 1
        halt.set()
        writer.join(timeout=5)
        lock.release()
    finally:
        halt.set()
        writer.join(timeout=5)
        stop(sleeper)


def test_own_leftover_lock_file_is_broken_within_a_second(tmp_path: Path) -> None:
    """A lock file naming this process but held by none of its instances is stale at once."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    lock_path.write_text(f"{os.getpid()} {sys.argv[0]}")
    lock = CrossProcessLock(lock_path, timeout=5)
    started = time.monotonic()
    with lock:
        assert time.monotonic() - started < 2
    assert lock.broken == 1


def test_set_aside_copies_are_private_and_bounded(cache_path: Path) -> None:
    """A world-readable corrupt file's copy is 0600, and at most MAX_SET_ASIDE are kept."""
    cache_path.parent.mkdir()
    for round_ in range(MAX_SET_ASIDE + 3):
        cache_path.write_bytes(b"not json %d" % round_)
        cache_path.chmod(0o644)
        _write(PersistedTokenCache(cache_path))
        cache_path.unlink()
    copies = sorted(cache_path.parent.glob("token_cache.json.corrupt-*"))
    assert len(copies) == MAX_SET_ASIDE
    assert {stat.S_IMODE(c.stat().st_mode) for c in copies} == {0o600}
    assert b"not json %d" % (MAX_SET_ASIDE + 2) in {c.read_bytes() for c in copies}


def test_directory_writable_by_others_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another user who can write the directory could swap the cache: the log says so."""
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    with caplog.at_level("WARNING", logger="msal_persist"):
        _write(PersistedTokenCache(directory / "token_cache.json"))
    assert "lets other users replace the cache" in caplog.text


def test_control_characters_in_a_path_cannot_forge_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r"""A newline in the cache path shows as \n in log lines, never as a line break."""
    directory = tmp_path / "evil\nWARNING forged"
    directory.mkdir()
    directory.chmod(0o777)
    with caplog.at_level("WARNING", logger="msal_persist"):
        _write(PersistedTokenCache(directory / "token_cache.json"))
    assert caplog.messages
    assert all("\n" not in message for message in caplog.messages)
    assert any("evil\\nWARNING forged" in message for message in caplog.messages)


def test_token_of_an_unrotated_refresh_is_written_at_exit_after_contention(
    cache_path: Path,
) -> None:
    """The exit flush still writes when the lock's inotify watch was made earlier."""
    done = subprocess.run(
        worker("cache", "flush_at_exit_after_contention", str(cache_path)),
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "could not write" not in done.stderr
    secrets = {e["secret"] for e in json.loads(cache_path.read_text())["AccessToken"].values()}
    assert "fresh-at-exit" in secrets


def test_one_bad_entry_is_set_aside_and_the_good_ones_keep_serving(cache_path: Path) -> None:
    """An access token with expires_on "soon" no longer breaks msal; the original is kept."""
    from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority  # noqa: PLC0415

    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    authority.sign_in(app)
    document = json.loads(cache_path.read_text())
    document["AccessToken"]["bad-key"] = {**next(iter(document["AccessToken"].values()))}
    document["AccessToken"]["bad-key"]["expires_on"] = "soon"
    cache_path.write_text(json.dumps(document))
    app = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    result = app.acquire_token_silent(DEFAULT_SCOPES, app.get_accounts()[0], force_refresh=True)
    assert "access_token" in result
    assert "bad-key" not in json.loads(cache_path.read_text())["AccessToken"]
    (copy,) = cache_path.parent.glob("token_cache.json.corrupt-*")
    assert "bad-key" in json.loads(copy.read_text())["AccessToken"]


def _strict(data: bytes) -> object:
    def refuse(name: str) -> None:
        raise ValueError(name)

    return json.loads(data, parse_constant=refuse)


def test_a_value_strict_json_cannot_carry_is_a_clear_error_and_nothing_is_written(
    cache_path: Path,
) -> None:
    """A NaN that reached memory is refused with CacheFileError; the file stays strict."""
    cache = PersistedTokenCache(cache_path)
    _write(cache, "before")
    before = cache_path.read_bytes()
    with pytest.raises(CacheFileError, match="strict JSON"), cache.transaction():
        cache._cache["Extra"]["bad"] = {"n": float("nan")}
        cache.has_state_changed = True
    assert cache_path.read_bytes() == before
    _strict(before)


def test_cli_remove_writes_strict_json_and_keeps_the_original(
    cache_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`msal-persist remove` writes strict JSON and keeps a file with bad parts as a copy."""
    from msal_persist._cli import main  # noqa: PLC0415
    from msal_persist.testing import LocalAuthority  # noqa: PLC0415

    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    authority.sign_in(app, "ada@example.test")
    authority.sign_in(app, "grace@example.test")
    text = cache_path.read_text()[:-1] + ',"Other_tool":[1e999]}'
    cache_path.write_text(text)
    assert main(["remove", "ada@example.test", str(cache_path), "--yes"]) == 0
    assert "kept the original as" in capsys.readouterr().out
    document = _strict(cache_path.read_bytes())
    assert isinstance(document, dict)
    assert "Other_tool" not in document
    assert {a["username"] for a in document["Account"].values()} == {"grace@example.test"}
    (copy,) = cache_path.parent.glob("token_cache.json.corrupt-*")
    assert copy.read_text() == text
