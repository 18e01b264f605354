"""The file layer: atomic saves, fingerprints, quarantine, permissions, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msal_persist import CacheFileError
from msal_persist._persistence import FilePersistence, Fingerprint


def test_missing_file_loads_as_absent(cache_path: Path) -> None:
    """A file that does not exist loads as absent, with no fingerprint."""
    persistence = FilePersistence(cache_path)
    snapshot = persistence.load()
    assert not snapshot.exists
    assert snapshot.data is None
    assert snapshot.version is None
    assert persistence.fingerprint() is None


def test_save_creates_private_file_and_directory(cache_path: Path) -> None:
    """save() creates the directory 0700 and the file 0600."""
    FilePersistence(cache_path).save(b"{}")
    assert cache_path.read_bytes() == b"{}"
    assert cache_path.stat().st_mode & 0o777 == 0o600
    assert cache_path.parent.stat().st_mode & 0o777 == 0o700


def test_fingerprint_of_save_matches_the_file(cache_path: Path) -> None:
    """The fingerprint save() returns is the one stat and load() see afterwards."""
    persistence = FilePersistence(cache_path)
    written = persistence.save(b'{"a":1}')
    assert persistence.fingerprint() == written
    assert persistence.load().version == written
    assert written == Fingerprint.from_stat(cache_path.stat())


def test_every_save_replaces_the_inode(cache_path: Path) -> None:
    """A save never rewrites the old file in place: readers holding it keep whole bytes."""
    persistence = FilePersistence(cache_path)
    persistence.save(b"old document")
    with cache_path.open("rb") as reader:
        persistence.save(b"new document, longer")
        assert reader.read() == b"old document"
    assert cache_path.read_bytes() == b"new document, longer"


@given(st.binary(max_size=200_000))
@settings(max_examples=40, deadline=None)
def test_save_then_load_round_trips(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """Whatever bytes are saved are exactly the bytes loaded, and no temp file is left."""
    path = tmp_path_factory.mktemp("rt") / "cache.json"
    persistence = FilePersistence(path, fsync=False)
    persistence.save(data)
    assert persistence.load().data == data
    assert sorted(p.name for p in path.parent.iterdir()) == ["cache.json"]


def test_counters_count_reads_and_writes(cache_path: Path) -> None:
    """Loads and saves count real file reads and writes."""
    persistence = FilePersistence(cache_path)
    persistence.save(b"1")
    persistence.save(b"2")
    persistence.load()
    assert (persistence.saves, persistence.loads) == (2, 1)


def test_path_is_expanded_and_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """~ is expanded and a relative path is fixed at construction, so chdir cannot move it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert FilePersistence("~/c.json").path == tmp_path / "c.json"
    monkeypatch.chdir(tmp_path)
    persistence = FilePersistence("rel.json")
    monkeypatch.chdir("/")
    assert persistence.path == tmp_path / "rel.json"


def test_directory_at_the_path_is_a_clear_error(cache_path: Path) -> None:
    """A directory where the file should be fails to load and to save, naming the path."""
    cache_path.mkdir(parents=True)
    persistence = FilePersistence(cache_path)
    with pytest.raises(CacheFileError, match="not a regular file") as loading:
        persistence.load()
    assert loading.value.path == str(cache_path)
    with pytest.raises(CacheFileError, match="directory") as saving:
        persistence.save(b"{}")
    assert isinstance(saving.value, OSError)
    assert cache_path.is_dir()


def test_parent_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """A parent path that is a regular file fails the save and leaves that file alone."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"keep me")
    persistence = FilePersistence(blocker / "cache.json")
    assert not persistence.load().exists
    with pytest.raises(CacheFileError) as caught:
        persistence.save(b"{}")
    assert caught.value.errno is not None
    assert blocker.read_bytes() == b"keep me"


def test_read_only_file_refuses_writes_but_reads(cache_path: Path) -> None:
    """A file its owner made read-only still loads, and save() refuses to replace it."""
    persistence = FilePersistence(cache_path)
    persistence.save(b"{}")
    cache_path.chmod(0o400)
    assert persistence.load().data == b"{}"
    with pytest.raises(CacheFileError, match="read-only"):
        persistence.save(b'{"x":1}')
    assert cache_path.read_bytes() == b"{}"


def test_unwritable_directory_is_a_clear_error(cache_path: Path) -> None:
    """A directory the process cannot write fails the save, naming file and directory."""
    if os.geteuid() == 0:
        # Root ignores permission bits; sysfs is mounted read-only even for root.
        cache_path = Path("/sys/token_cache.json")
    else:
        cache_path.parent.mkdir()
        cache_path.parent.chmod(0o500)
    with pytest.raises(CacheFileError, match="cannot create a file in") as caught:
        FilePersistence(cache_path).save(b"{}")
    assert caught.value.path == str(cache_path)
    assert str(cache_path.parent) in str(caught.value)
    assert not cache_path.exists()


def test_quarantine_moves_the_bytes_aside(cache_path: Path) -> None:
    """quarantine() renames the file to <name>.corrupt-<UTC stamp>, bytes intact, twice over."""
    persistence = FilePersistence(cache_path)
    cache_path.parent.mkdir()
    cache_path.write_bytes(b"not json")
    first = persistence.quarantine()
    cache_path.write_bytes(b"[]")
    second = persistence.quarantine()
    assert first is not None
    assert second is not None
    assert first != second
    assert first.name.startswith("token_cache.json.corrupt-")
    assert first.read_bytes() == b"not json"
    assert second.read_bytes() == b"[]"
    assert not cache_path.exists()
    assert persistence.quarantine() is None


def test_remove_reports_whether_there_was_a_file(cache_path: Path) -> None:
    """remove() deletes the file and says whether one existed."""
    persistence = FilePersistence(cache_path)
    persistence.save(b"{}")
    assert persistence.remove() is True
    assert persistence.remove() is False


def test_stale_temp_files_of_dead_writers_are_removed(cache_path: Path) -> None:
    """Temp files left by killed writers are swept; a live writer's temp file is kept."""
    persistence = FilePersistence(cache_path)
    persistence.save(b"{}")
    dead = cache_path.parent / ".token_cache.json.999999999-abcd.tmp"
    live = cache_path.parent / f".token_cache.json.{os.getpid()}-abcd.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    (cache_path.parent / ".token_cache.json.no-pid.tmp").write_bytes(b"half")
    assert persistence.stale_temp_files() == [dead]  # what doctor reports, nothing removed
    assert dead.exists()
    assert persistence.remove_stale_temp_files() == 1
    assert not dead.exists()
    assert live.exists()
    assert persistence.stale_temp_files() == []
