"""Autouse fixtures shared by tests/ and tests_interop/ (each conftest imports them)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


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
