"""Shared pieces of the benchmark: the contenders, the stand-in authority, the fixtures.

Imported by ``run.py`` (the parent) and by ``_worker.py`` (the subprocesses). Only the
standard library, msal and msal-persist are imported at module level; msal-extensions is
imported on first use, so workers that do not need it do not pay for it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msal

from msal_persist import PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

MEMORY = "memory"
RECIPE = "recipe"
EXTENSIONS = "msal-extensions"
PERSIST = "msal-persist"
ENCRYPTED = "msal-persist-encrypted"
CONTENDERS = (MEMORY, RECIPE, EXTENSIONS, PERSIST)
LABELS = {
    MEMORY: "in-memory",
    RECIPE: "recipe (load/save at exit)",
    EXTENSIONS: "msal-extensions",
    PERSIST: "msal-persist",
    ENCRYPTED: "msal-persist, encrypted",
}
BENCH_KEY = os.urandom(32)
"""The key of the encrypted contender (AES-256-GCM; given by the application)."""
SCOPES = DEFAULT_SCOPES
CACHE_NAME = "token_cache.json"


def username(index: int) -> str:
    return f"user{index:05d}@example.test"


class CapturingAuthority(LocalAuthority):
    """The stand-in tenant, remembering the last refresh token it handed out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_refresh_token: str | None = None

    def post(self, url: str, *args: Any, **kwargs: Any) -> Any:
        response = super().post(url, *args, **kwargs)
        if response.status_code == 200 and '"refresh_token"' in response.text:
            self.last_refresh_token = json.loads(response.text)["refresh_token"]
        return response


@dataclass
class Contender:
    """One cache under test, with what the benchmark needs to drive and observe it."""

    kind: str
    path: Path
    cache: msal.SerializableTokenCache
    finish: Callable[[], None] = lambda: None
    writes: Callable[[], int] = lambda: 0
    extra: dict[str, Any] = field(default_factory=dict)


def make_contender(kind: str, path: Path) -> Contender:
    """Build the cache of one contender on ``path`` (which may or may not exist yet)."""
    if kind == MEMORY:
        cache = msal.SerializableTokenCache()
        if path.exists():
            cache.deserialize(path.read_text(encoding="utf-8"))
        return Contender(kind, path, cache)
    if kind == RECIPE:
        # msal's documented recipe: deserialize at start, write serialize() at exit if changed.
        cache = msal.SerializableTokenCache()
        if path.exists():
            cache.deserialize(path.read_text(encoding="utf-8"))
        saves = [0]

        def finish() -> None:
            if cache.has_state_changed:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(cache.serialize())
                saves[0] += 1

        return Contender(kind, path, cache, finish=finish, writes=lambda: saves[0])
    if kind == EXTENSIONS:
        import msal_extensions  # noqa: PLC0415 - only the processes that use it pay for it

        persistence = msal_extensions.FilePersistence(str(path))
        saves = [0]
        original_save = persistence.save

        def counting_save(content: str) -> None:
            saves[0] += 1
            original_save(content)

        persistence.save = counting_save  # type: ignore[method-assign]
        cache = msal_extensions.PersistedTokenCache(persistence)
        return Contender(kind, path, cache, writes=lambda: saves[0])
    if kind in (PERSIST, ENCRYPTED):
        cache = PersistedTokenCache(path, encryption=BENCH_KEY if kind == ENCRYPTED else None)
        # flush() is what msal-persist's atexit hook does; normally there is nothing queued.
        return Contender(kind, path, cache, finish=cache.flush, writes=lambda: cache.store.saves)
    raise ValueError(f"unknown contender {kind!r}")


def build_state(accounts: int) -> str:
    """Sign ``accounts`` users in to an in-memory cache (for real) and return msal's document."""
    authority = LocalAuthority(username=username(0))
    cache = msal.SerializableTokenCache()
    app = authority.public_client(token_cache=cache)
    for index in range(accounts):
        authority.sign_in(app, username=username(index))
    return cache.serialize()


def extensions_lock_flavour() -> tuple[str, str]:
    """Which lock msal-extensions' PersistedTokenCache uses here: (short name, description)."""
    import msal_extensions.token_cache  # noqa: PLC0415

    module = msal_extensions.token_cache.CrossPlatLock.__module__
    if module.endswith(".cache_lock"):
        return (
            "portalocker",
            (
                "msal_extensions.cache_lock (portalocker importable): exclusive-create the "
                "lock file, polling every 0.25 s for up to 5 s (then proceeds anyway), then "
                "a portalocker flock with a 5 s timeout"
            ),
        )
    if module.endswith(".filelock"):
        return (
            "exclusive-create",
            (
                "msal_extensions.filelock: exclusive-create only, polling every 0.25 s, "
                "LockError after 5 s"
            ),
        )
    return module, module


def file_system_of(path: str | os.PathLike[str]) -> str:
    """The file system type and mount point holding ``path`` (from /proc/mounts)."""
    target = os.path.realpath(path)
    best = ("", "unknown")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best[0]):
                    best = (mount, f"{parts[2]} ({parts[0]} on {mount})")
    except OSError:
        return "unknown"
    return best[1]


class Meter:
    """Cumulative time and calls of wrapped callables."""

    def __init__(self) -> None:
        self.time: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        had_own = name in vars(owner) if hasattr(owner, "__dict__") else False
        self.time.setdefault(label, 0.0)
        self.calls.setdefault(label, 0)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.time[label] += time.perf_counter() - started
                self.calls[label] += 1

        setattr(owner, name, wrapper)
        if had_own:
            self._undo.append(lambda: setattr(owner, name, original))
        else:
            self._undo.append(lambda: delattr(owner, name))

    def reset(self) -> None:
        for label in self.time:
            self.time[label] = 0.0
            self.calls[label] = 0

    def undo(self) -> None:
        for step in reversed(self._undo):
            step()
        self._undo.clear()


def now() -> float:
    """A clock comparable across processes on this host (CLOCK_MONOTONIC on Linux)."""
    return time.monotonic()


def python_version() -> str:
    return f"{sys.implementation.name} {sys.version.split()[0]}"
