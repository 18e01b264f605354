"""Fixtures for both test suites (``tests/`` and ``tests_interop/``).

Every test gets a private cache path, no network and none of the developer's own cache or
runtime directory. The helpers and workers in ``tests/`` are importable in both suites
through pytest's ``pythonpath`` setting (pyproject.toml); worker processes get the same path
from ``process_helpers.worker_env``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    """``token_cache.json`` in a fresh directory; neither exists yet.

    The directory's parent is the test's own ``tmp_path``, which pytest makes with mode 0700;
    the directory is made 0700 by whoever writes first (msal-persist makes it so itself).
    """
    return tmp_path / "cache" / "token_cache.json"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach the network: msal must only talk to the stand-in."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        msg = "network access attempted in a test"
        raise AssertionError(msg)

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's own cache and runtime dir out of reach of every test."""
    monkeypatch.delenv("MSAL_PERSIST_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
