"""Parent-side helpers: start peer processes, always reap them, and watch the shared file."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from process_helpers import Outcome, run_all, worker

WORKER_TIMEOUT = 45.0
Measure = Callable[[str, object], None]
"""The ``measure`` fixture: record a measured number (or short text) under a name."""
STANDARD_SECTIONS = frozenset({"AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata"})


def peer_command(role: str, **args: Any) -> list[str]:
    """The command that runs one peer process (see tests/workers/interop.py) in ``role``."""
    return worker("interop", role, json.dumps(args))


def refresher_commands(cache_path: Path, kinds: Sequence[str], **limit: Any) -> list[str]:
    """Commands for refreshing peers of ``kinds``, each its own user, behind one barrier.

    ``limit`` is ``refreshes=N`` or ``duration=seconds``.
    """
    barrier = cache_path.with_name("barrier")
    return [
        peer_command(
            "refresh",
            kind=kind,
            cache=str(cache_path),
            user=f"{kind}-{i}@example.test",
            barrier=str(barrier),
            parties=len(kinds),
            **limit,
        )
        for i, kind in enumerate(kinds)
    ]


def run_peers(commands: Sequence[list[str]], timeout: float = WORKER_TIMEOUT) -> list[Outcome]:
    """Start every peer at once and wait for all; kill and reap any left at the deadline."""
    return run_all(commands, timeout)


def reports(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Every peer's JSON report (its last stdout line); fail naming each that did not end well."""
    failed = [o.describe() for o in outcomes if not o.ok or not o.stdout.strip()]
    assert not failed, "\n".join(failed)
    return [json.loads(o.stdout.strip().splitlines()[-1]) for o in outcomes]


def kill_hard(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` (no cleanup of any kind runs in it) and reap it."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def read_document(path: Path) -> dict[str, Any]:
    """The cache file as JSON (it must parse)."""
    document = json.loads(path.read_bytes())
    assert isinstance(document, dict)
    return document


def refresh_tokens(document: dict[str, Any]) -> set[str]:
    """Every refresh token secret in a cache document."""
    return {entry["secret"] for entry in document.get("RefreshToken", {}).values()}


def account_ids(document: dict[str, Any]) -> set[str]:
    """Every account's home_account_id in a cache document."""
    return {entry["home_account_id"] for entry in document.get("Account", {}).values()}


@dataclasses.dataclass
class SampleCounts:
    """What lock-free reads of the cache file saw.

    ``torn_in_place`` are unparsable reads of an in-place write: an empty file (truncated, not
    yet written) or a prefix of an indent=4 document, which is what msal-extensions writes
    with ``O_TRUNC`` and then ``write``. msal-persist replaces the file atomically and writes
    compact JSON, so any other unparsable read (``torn_other``) would be its fault.
    """

    reads: int = 0
    parsed: int = 0
    absent: int = 0
    torn_in_place: int = 0
    torn_other: int = 0
    min_accounts: int | None = None
    torn_examples: list[str] = dataclasses.field(default_factory=list)
    refresh_tokens: list[dict[str, str]] = dataclasses.field(default_factory=list)
    """Per parsed read, each account's refresh token, in the order read."""
    versions: list[tuple[str, int, int]] = dataclasses.field(default_factory=list)
    """Each version read, in order: its format, its newest mtime seen, when last read (ns)."""

    def mtime_behind(self) -> dict[str, int]:
        """New versions whose mtime is older than a read of the version before, by format.

        msal-extensions reloads only when the file's ``mtime`` is later than the
        ``time.time()`` it noted after its last load. A version counted here is one that a
        reader which loaded the version before at that moment would never reload (until a
        later write), so its next write would put its stale state back over it.
        ``compact`` is msal-persist's output, ``indented`` msal-extensions' (and plain msal's).
        """
        behind = {"compact": 0, "indented": 0}
        for (_, _, read_at), (fmt, mtime_ns, _) in zip(
            self.versions, self.versions[1:], strict=False
        ):
            if mtime_ns < read_at:
                behind[fmt] += 1
        return behind

    def rollbacks(self, user_rts: Sequence[str], home_account_id: str) -> int:
        """How often the file went back to an older refresh token of one user, or lost it.

        ``user_rts`` are that user's refresh tokens in the order its process obtained them.
        Only that process refreshes that user, so the file may only ever move forward in
        this list; stepping back (or dropping the token) means a stale state was written.
        """
        order = {rt: i for i, rt in enumerate(user_rts)}
        previous = None
        events = 0
        for snapshot in self.refresh_tokens:
            rt = snapshot.get(home_account_id)
            # Absent (before the sign-in landed, or erased) ranks below every known token.
            index = -1 if rt is None else order.get(rt, -1)
            if previous is not None and index < previous:
                events += 1
            previous = index
        return events


class FileSampler:
    """A thread that reads the cache file in a loop, without any lock, while peers write it."""

    def __init__(self, path: Path, pause: float = 0.0005) -> None:
        """Sample ``path`` every ``pause`` seconds once started."""
        self.path = path
        self.pause = pause
        self.counts = SampleCounts()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="file-sampler", daemon=True)

    def __enter__(self) -> FileSampler:
        """Start sampling."""
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        counts = self.counts
        previous: bytes | None = None
        while not self._stop.is_set():
            try:
                data, mtime_ns = _read_with_mtime(self.path)
            except FileNotFoundError:
                counts.reads += 1
                counts.absent += 1
                time.sleep(self.pause)
                continue
            read_at = time.time_ns()  # when msal-extensions would note its _last_sync
            counts.reads += 1
            try:
                document = json.loads(data)
            except ValueError:
                if data in {b"", b"{"} or data.startswith(b"{\n"):
                    counts.torn_in_place += 1
                else:
                    counts.torn_other += 1
                if len(counts.torn_examples) < 5:
                    counts.torn_examples.append(f"{len(data)} bytes: {data[:20]!r}")
                time.sleep(self.pause)
                continue
            counts.parsed += 1
            if data != previous:
                fmt = "indented" if data.startswith(b"{\n") else "compact"
                counts.versions.append((fmt, mtime_ns, read_at))
                previous = data
            else:
                fmt, newest, _ = counts.versions[-1]
                counts.versions[-1] = (fmt, max(newest, mtime_ns), read_at)
            counts.refresh_tokens.append(
                {
                    e["home_account_id"]: e["secret"]
                    for e in document.get("RefreshToken", {}).values()
                }
            )
            n = len(document.get("Account", {}))
            counts.min_accounts = n if counts.min_accounts is None else min(n, counts.min_accounts)
            time.sleep(self.pause)


def _read_with_mtime(path: Path) -> tuple[bytes, int]:
    """The file's bytes, and its mtime taken after reading them from the same handle."""
    with path.open("rb") as handle:
        data = handle.read()
        return data, os.fstat(handle.fileno()).st_mtime_ns
