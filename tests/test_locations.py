"""Where the cache lives by default: the documented precedence and its reasons."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

from msal_persist import CacheLocationError, PersistedTokenCache, default_cache_path


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    path.chmod(0o700)
    return path


def test_explicit_path_wins(runtime_dir: Path, tmp_path: Path) -> None:
    """An explicit path beats the environment variable and the runtime dir."""
    environ = {
        "MSAL_PERSIST_CACHE": str(tmp_path / "env.json"),
        "XDG_RUNTIME_DIR": str(runtime_dir),
    }
    location = default_cache_path(explicit=tmp_path / "mine.json", environ=environ)
    assert (location.path, location.rule) == (tmp_path / "mine.json", "explicit")


def test_environment_variable_beats_runtime_dir(runtime_dir: Path, tmp_path: Path) -> None:
    """MSAL_PERSIST_CACHE is used when no explicit path is given, with the reason recorded."""
    environ = {
        "MSAL_PERSIST_CACHE": str(tmp_path / "env.json"),
        "XDG_RUNTIME_DIR": str(runtime_dir),
    }
    location = default_cache_path(environ=environ)
    assert (location.path, location.rule) == (tmp_path / "env.json", "environment")
    assert location.reasons == ("no explicit path was given",)


def test_safe_runtime_dir_is_used_per_app(runtime_dir: Path) -> None:
    """A safe XDG_RUNTIME_DIR gives <dir>/<app>/token_cache.json, not persistent."""
    location = default_cache_path("myapp", environ={"XDG_RUNTIME_DIR": str(runtime_dir)})
    assert location.path == runtime_dir / "myapp" / "token_cache.json"
    assert location.rule == "xdg-runtime-dir"
    assert location.persistent is False
    assert "MSAL_PERSIST_CACHE is not set" in location.reasons


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda _: None, "is not set"),
        (lambda d: d.chmod(0o755), "has mode 0755, not 0700"),
        (lambda _: "relative/dir", "is not an absolute path"),
        (lambda d: d / "missing", "cannot be used"),
    ],
)
def test_unsafe_runtime_dir_falls_back_to_user_cache_dir(
    runtime_dir: Path, make: object, problem: str
) -> None:
    """An unset, exposed, relative or missing XDG_RUNTIME_DIR is skipped, with the reason."""
    assert callable(make)
    result = make(runtime_dir)
    value = "" if problem == "is not set" else str(result or runtime_dir)
    location = default_cache_path("myapp", environ={"XDG_RUNTIME_DIR": value})
    assert location.rule == "user-cache-dir"
    assert location.persistent is True
    assert location.path == Path(
        platformdirs.user_cache_dir("myapp", appauthor=False), "token_cache.json"
    )
    assert problem in location.reasons[-1]


def test_symlinked_runtime_dir_is_refused(runtime_dir: Path, tmp_path: Path) -> None:
    """A symlink as XDG_RUNTIME_DIR is refused (another user could point it anywhere)."""
    link = tmp_path / "link"
    link.symlink_to(runtime_dir)
    location = default_cache_path(environ={"XDG_RUNTIME_DIR": str(link)})
    assert location.rule == "user-cache-dir"
    assert "symlink" in location.reasons[-1]


def test_never_the_current_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With XDG_RUNTIME_DIR unset the cache does not land in the working directory."""
    monkeypatch.chdir(tmp_path)
    location = default_cache_path(environ={})
    assert location.path.parent != tmp_path
    assert location.path.is_absolute()


@pytest.mark.parametrize("bad", ["", "   ", "dir/"])
def test_bad_explicit_paths_are_rejected(bad: str) -> None:
    """Empty paths and paths naming a directory raise CacheLocationError."""
    with pytest.raises(CacheLocationError):
        default_cache_path(explicit=bad)


def test_existing_directory_is_rejected_as_cache_path(tmp_path: Path) -> None:
    """An existing directory given as the cache path is refused before anything is written."""
    with pytest.raises(CacheLocationError, match="directory"):
        PersistedTokenCache(tmp_path)


@pytest.mark.parametrize("bad", ["", "..", "a/b"])
def test_bad_app_names_are_rejected(bad: str) -> None:
    """App names that are not a plain directory name raise CacheLocationError."""
    with pytest.raises(CacheLocationError, match="app name"):
        default_cache_path(bad, environ={})


def test_cache_uses_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PersistedTokenCache() with no path follows MSAL_PERSIST_CACHE, with ~ expanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MSAL_PERSIST_CACHE", "~/tokens.json")
    cache = PersistedTokenCache()
    assert os.fspath(cache.path) == str(tmp_path / "tokens.json")
    assert cache.location.rule == "environment"
