"""Fixtures for the interop tests: a report of what was measured (the rest is ../conftest.py).

These tests need msal-extensions (``nox -s interop`` installs it). Every number a test
measures (lost updates, torn reads, stalls, stale-lock delays) is recorded with pytest's
``record_property`` (so it lands in JUnit XML) and printed in an "interop measurements"
section at the end of the run.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest

try:
    import msal_extensions  # noqa: F401 - fail early, with a reason, if it is missing
except ImportError as error:  # pragma: no cover - depends on the environment
    msg = "tests_interop needs msal-extensions installed (run: nox -s interop)"
    raise ImportError(msg) from error

from interop_helpers import Measure

MEASUREMENTS = pytest.StashKey[list[tuple[str, str, object]]]()


def pytest_configure(config: pytest.Config) -> None:
    """Start an empty list of measurements."""
    config.stash[MEASUREMENTS] = []


def pytest_report_header() -> list[str]:
    """Name the versions of everything that shares the cache file."""
    names = ("msal", "msal-extensions", "portalocker")
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)
    return [f"interop peers: {versions}"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every measurement, by test."""
    measurements = terminalreporter.config.stash.get(MEASUREMENTS, [])
    if not measurements:
        return
    terminalreporter.section("interop measurements")
    last = None
    for nodeid, name, value in measurements:
        if nodeid != last:
            terminalreporter.write_line(nodeid.rpartition("::")[2])
            last = nodeid
        terminalreporter.write_line(f"    {name}: {value}")


@pytest.fixture
def measure(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
) -> Measure:
    """Record one measured number (or short text) for the report and for JUnit XML."""

    def record(name: str, value: object) -> None:
        if isinstance(value, float):
            value = round(value, 4)
        record_property(name, value)
        request.config.stash[MEASUREMENTS].append((request.node.nodeid, name, value))
        print(f"{name}: {value}")

    return record


@pytest.fixture(autouse=True)
def _private_cache_directory(cache_path: Path) -> None:
    """Make ``cache_path``'s directory (0700) before peers use it.

    Peers put their barrier file there, plain msal writes the file without making a
    directory, and msal-extensions would make it with the umask's mode: here the directory
    exists, private, before any of them runs.
    """
    cache_path.parent.mkdir(mode=0o700)
