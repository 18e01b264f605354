"""Shared fixtures: a private cache path per test, no network, no developer environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_fixtures import _isolated_environment, _no_network

__all__ = ["_isolated_environment", "_no_network", "cache_path"]


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    """A cache file path in a fresh directory (the file does not exist yet)."""
    return tmp_path / "cache" / "token_cache.json"
