"""read_settled: a lock-free read that tells a peer's write in progress from a bad file."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from msal_persist import FileStore, PersistedTokenCache
from msal_persist._settle import SETTLE_SECONDS, read_settled
from msal_persist.testing import LocalAuthority


def _signed_in(path: Path) -> bytes:
    authority = LocalAuthority()
    authority.sign_in(authority.public_client(token_cache=PersistedTokenCache(path)))
    return path.read_bytes()


def test_a_document_is_read_and_decoded_once(cache_path: Path) -> None:
    """A valid cache is read once, without waiting, and handed over decoded."""
    good = _signed_in(cache_path)
    store = FileStore(cache_path)
    reading = read_settled(store)
    assert reading.snapshot.data == good
    assert reading.decoded is not None
    assert len(reading.decoded.state["Account"]) == 1
    assert reading.problem is None
    assert store.loads == 1


def test_no_file_is_no_cache(cache_path: Path) -> None:
    """A missing file reads as no cache, and nothing is created."""
    reading = read_settled(FileStore(cache_path))
    assert (reading.snapshot.data, reading.decoded, reading.problem) == (None, None, None)
    assert not cache_path.parent.exists()


def test_bad_bytes_that_stay_bad_are_reported_and_left_alone(cache_path: Path) -> None:
    """Bytes that do not decode for SETTLE_SECONDS are bad: said why, never moved or locked."""
    cache_path.parent.mkdir()
    cache_path.write_bytes(b'{"AccessToken": {"truncated')
    started = time.monotonic()
    reading = read_settled(FileStore(cache_path))
    assert time.monotonic() - started >= SETTLE_SECONDS
    assert reading.decoded is None
    assert reading.problem is not None
    assert reading.problem.startswith("not valid JSON")
    assert os.listdir(cache_path.parent) == [cache_path.name]
    assert cache_path.read_bytes() == b'{"AccessToken": {"truncated'


def test_a_peer_write_in_progress_is_waited_for(cache_path: Path) -> None:
    """Half-written bytes that a peer completes within the settle time are read as the result."""
    good = _signed_in(cache_path)
    cache_path.write_bytes(good[: len(good) // 2])  # a peer truncated, and is rewriting

    def finish() -> None:
        time.sleep(SETTLE_SECONDS / 2)
        cache_path.write_bytes(good)

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        reading = read_settled(FileStore(cache_path))
    finally:
        writer.join(timeout=10)
    assert reading.decoded is not None
    assert reading.snapshot.data == good
    assert list(cache_path.parent.glob("*.corrupt-*")) == []
