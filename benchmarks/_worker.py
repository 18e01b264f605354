"""One process of the multi-process workloads (contention and lock handoff).

Usage: ``python _worker.py`` (started by ``_pool.py``; PYTHONPATH inherited). It serves rounds,
one JSON command per stdin line, until end of input:

1. Command ``{"kind", "path", "user", "refreshes", "max_seconds"}``: build the contender's
   cache on ``path`` from scratch (the recipe loads the file here), sign ``user`` in, print
   ``READY`` and wait for a line on stdin: the barrier, the parent sends ``GO`` to every
   worker of the round at once.
2. Do ``refreshes`` forced refreshes back to back (stop early past ``max_seconds``), timing
   each; the recipe then saves, as it would at exit.
3. Print one JSON line: start/end (CLOCK_MONOTONIC, comparable across processes), the
   per-acquisition latencies, the errors, the last refresh token the authority issued to this
   process, the number of file writes and, for msal-persist, its lock counters.

Starting Python and importing msal costs ~0.2 s of CPU per process; reusing the processes
across rounds keeps 32-process rounds from spending most of the run in start-up. Each round
starts from a fresh cache object on a fresh file, and everything before the barrier is
outside the measurement anyway.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _common import EXTENSIONS, SCOPES, CapturingAuthority, Meter, make_contender, now


class LockRecorder:
    """Record when this process held the cross-process lock (CLOCK_MONOTONIC intervals).

    Wraps msal-persist's ``CrossProcessLock.acquire/release`` on the instance, or
    msal-extensions' ``CrossPlatLock`` class; costs two clock reads per acquisition. The
    parent merges every worker's intervals: gaps between one release and the next
    acquisition are the handoff cost, overlaps would be two holders at once.
    """

    def __init__(self) -> None:
        self.intervals: list[list[float]] = []
        self.recording = False

    def acquired(self) -> None:
        if self.recording:
            self.intervals.append([now(), 0.0, time.thread_time()])

    def released(self) -> None:
        if self.recording and self.intervals and not self.intervals[-1][1]:
            self.intervals[-1][1] = now()
            # Third field: CPU seconds this thread used while holding the lock.
            self.intervals[-1][2] = time.thread_time() - self.intervals[-1][2]

    def attach(self, contender: Any) -> None:
        lock = _persist_lock(contender.cache)
        if lock is not None and hasattr(lock, "acquire"):
            acquire, release = lock.acquire, lock.release

            def recorded_acquire(*args: Any, **kwargs: Any) -> None:
                acquire(*args, **kwargs)
                self.acquired()

            def recorded_release(*args: Any, **kwargs: Any) -> None:
                self.released()
                release(*args, **kwargs)

            lock.acquire, lock.release = recorded_acquire, recorded_release
        elif contender.kind == EXTENSIONS:
            import msal_extensions.token_cache as ext  # noqa: PLC0415

            original = getattr(ext, "_unrecorded_lock", ext.CrossPlatLock)
            recorder = self

            class RecordedLock(original):  # type: ignore[misc, valid-type]
                def __enter__(self) -> Any:
                    handle = super().__enter__()
                    recorder.acquired()
                    return handle

                def __exit__(self, *exc_info: object) -> Any:
                    recorder.released()
                    return super().__exit__(*exc_info)

            ext._unrecorded_lock = original
            ext.CrossPlatLock = RecordedLock


def _persist_lock(cache: Any) -> Any:
    """msal-persist's CrossProcessLock (its file store's), or None for other contenders."""
    return getattr(getattr(cache, "store", None), "lock", None)


def instrument(contender: Any) -> Meter:
    """Time what msal-persist does under the lock (profile_paths.py contention)."""
    meter = Meter()
    cache = contender.cache
    if hasattr(cache, "store"):
        meter.wrap(cache.store.lock, "acquire", "lock.acquire (incl. waiting)")
        meter.wrap(cache.store.lock, "release", "lock.release")
        meter.wrap(cache, "_sync_locked", "_sync_locked (reload + queued add)")
        meter.wrap(cache, "_commit_locked", "_commit_locked (encode + save)")
        meter.wrap(cache.store, "save", "store.save")
    meter.wrap(os, "fsync", "os.fsync")
    meter.wrap(os, "replace", "os.replace")
    meter.wrap(time, "sleep", "time.sleep (lock polling)")
    return meter


def serve_round(command: dict[str, Any]) -> dict[str, Any] | None:
    errors: list[str] = []
    recorder = LockRecorder()
    meter: Meter | None = None
    user = command["user"]
    app = account = contender = authority = None
    try:
        contender = make_contender(command["kind"], Path(command["path"]))
        recorder.attach(contender)
        if command.get("instrument"):
            meter = instrument(contender)
        authority = CapturingAuthority(username=user)
        app = authority.public_client(token_cache=contender.cache)
        authority.sign_in(app, username=user)
        accounts = app.get_accounts(username=user)
        if len(accounts) != 1:
            raise LookupError(f"{len(accounts)} accounts found right after the sign-in")
        (account,) = accounts
    except Exception as error:
        errors.append(f"before the barrier: {type(error).__name__}: {error}"[:200])
        app = None

    sys.stdout.write("READY\n")
    sys.stdout.flush()
    if sys.stdin.readline().strip() != "GO":
        return None

    latencies: list[float] = []
    if meter is not None:
        meter.reset()
    recorder.recording = True
    start = now()
    cpu_start = time.process_time()
    deadline = start + float(command["max_seconds"])
    for _ in range(int(command["refreshes"]) if app is not None else 0):
        began = time.perf_counter()
        try:
            result = app.acquire_token_silent(SCOPES, account, force_refresh=True)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}"[:200])
        else:
            if result is None:
                # msal found no refresh token: the cache it read had lost this account.
                errors.append("acquire_token_silent returned None (account's tokens not found)")
            elif "access_token" not in result:
                errors.append(f"acquire_token_silent error: {result.get('error')!r}"[:200])
        latencies.append(time.perf_counter() - began)
        if now() > deadline:
            errors.append("stopped early: time budget exhausted")
            break
    if contender is not None:
        try:
            contender.finish()
        except Exception as error:
            errors.append(f"save at exit: {type(error).__name__}: {error}"[:200])
    end = now()
    cpu = time.process_time() - cpu_start
    recorder.recording = False

    report: dict[str, Any] = {
        "start": start,
        "end": end,
        "latencies": latencies,
        "errors": errors,
        "last_refresh_token": authority.last_refresh_token if authority else None,
        "writes": contender.writes() if contender else 0,
        "lock_intervals": recorder.intervals,
        "cpu": cpu,
    }
    if meter is not None:
        meter.undo()
        report["meter"] = {"time": meter.time, "calls": meter.calls}
    lock = _persist_lock(contender.cache) if contender else None
    if lock is not None:
        report["lock"] = {
            "acquisitions": lock.acquisitions,
            "contended": lock.contended,
            "waited": lock.waited,
        }
    return report


def main() -> int:
    sys.stdout.write("HELLO\n")
    sys.stdout.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        report = serve_round(json.loads(line))
        if report is None:
            return 3
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        gc.collect()  # drop the round's cache (and, for msal-persist, its lock) now
    return 0


if __name__ == "__main__":
    sys.exit(main())
