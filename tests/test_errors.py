"""The error hierarchy: one base, builtin-compatible leaves, picklable with context."""

from __future__ import annotations

import errno
import pickle

import pytest

from msal_persist import CacheFileError, CacheLocationError, LockTimeoutError, MsalPersistError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (LockTimeoutError("/c.lockfile", 5.0, 42), TimeoutError),
        (CacheFileError("/c.json", "write", "the file is read-only", errno.EACCES), OSError),
        (CacheLocationError("", "the path is empty"), ValueError),
    ],
)
def test_every_error_is_an_msal_persist_error_and_its_builtin(
    error: MsalPersistError, builtin: type[Exception]
) -> None:
    """Each leaf is caught by `except MsalPersistError` and by its matching builtin."""
    assert isinstance(error, MsalPersistError)
    assert isinstance(error, builtin)


def test_lock_timeout_names_path_and_holder_and_pickles() -> None:
    """LockTimeoutError carries path, timeout and holder pid, in its text and through pickle."""
    error = LockTimeoutError("/c.json.lockfile", 2.5, 4242)
    assert str(error) == "could not lock /c.json.lockfile within 2.5 s: it is held by process 4242"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.timeout, clone.holder_pid) == ("/c.json.lockfile", 2.5, 4242)
    assert str(clone) == str(error)
    assert "unknown process" in str(LockTimeoutError("/x", 1, None))


def test_cache_file_error_keeps_errno_and_pickles() -> None:
    """CacheFileError keeps errno and words, formats one clear line, survives pickle."""
    error = CacheFileError.from_os_error("/c.json", "read", PermissionError(errno.EACCES, "nope"))
    assert str(error) == "cannot read token cache /c.json: nope"
    assert error.errno == errno.EACCES
    assert error.filename == "/c.json"
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.operation, clone.reason, clone.errno) == (
        "/c.json",
        "read",
        "nope",
        errno.EACCES,
    )
    assert str(clone) == str(error)


def test_cache_location_error_pickles() -> None:
    """CacheLocationError carries the rejected path and reason through pickle."""
    error = CacheLocationError("/tmp/dir/", "it names a directory, not a file")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.reason) == (error.path, error.reason)
    assert str(clone) == str(error)
