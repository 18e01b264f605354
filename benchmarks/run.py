"""Benchmark msal-persist against in-memory msal, msal's recipe and msal-extensions.

Usage::

    python benchmarks/run.py [--quick] [--tmpdir DIR] [--output FILE]

Every contender runs every workload in fresh temporary directories, with real msal
applications talking to msal-persist's in-process stand-in for Entra ID (no network). The
report (Markdown) goes to stdout and to ``benchmarks/results/latest.md``. See DESIGN.md,
"Targets", for what is measured and why.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from _common import (
    CACHE_NAME,
    CONTENDERS,
    EXTENSIONS,
    LABELS,
    MEMORY,
    PERSIST,
    RECIPE,
    SCOPES,
    build_state,
    extensions_lock_flavour,
    file_system_of,
    make_contender,
    python_version,
    username,
)
from _pool import Outcome, WorkerPool
from msal_persist.testing import LocalAuthority

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.md"
LARGE = 2000


@dataclass(frozen=True)
class Settings:
    """How much of everything to do; ``--quick`` shrinks counts, never the workloads."""

    name: str
    reps: int  # single-process workloads
    process_reps: int  # contention and handoff
    hit_ops: int
    hit_seconds: float
    write_small_ops: int
    write_small_seconds: float
    write_large_ops: int
    write_large_seconds: float
    floor_small_ops: int
    floor_large_ops: int
    contention_procs: tuple[int, ...] = (2, 8, 32)
    contention_refreshes: int = 20
    handoff_procs: int = 8
    handoff_refreshes: int = 25
    worker_timeout: float = 120.0


QUICK = Settings(
    name="quick",
    reps=3,
    process_reps=3,
    hit_ops=2000,
    hit_seconds=0.3,
    write_small_ops=100,
    write_small_seconds=0.6,
    write_large_ops=12,
    write_large_seconds=1.2,
    floor_small_ops=100,
    floor_large_ops=8,
)
FULL = Settings(
    name="full",
    reps=5,
    process_reps=5,
    hit_ops=10000,
    hit_seconds=1.0,
    write_small_ops=400,
    write_small_seconds=2.0,
    write_large_ops=40,
    write_large_seconds=4.0,
    floor_small_ops=400,
    floor_large_ops=30,
)


# -- helpers ------------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def timed(op: Callable[[], object], max_ops: int, max_seconds: float, batch: int = 1) -> float:
    """Mean seconds per call of ``op``: up to ``max_ops`` calls, stopping after ``max_seconds``.

    At least two batches run whatever the time budget says.
    """
    gc.collect()
    calls = 0
    start = time.perf_counter()
    deadline = start + max_seconds
    while calls < max_ops:
        for _ in range(batch):
            op()
        calls += batch
        if calls >= 2 * batch and time.perf_counter() > deadline:
            break
    return (time.perf_counter() - start) / calls


def rotated(items: tuple[str, ...], rep: int) -> list[str]:
    """The contenders in a different order on each repetition (drift hits all alike)."""
    shift = rep % len(items)
    return list(items[shift:] + items[:shift])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    # Nearest rank: the smallest value with at least q % of the values at or below it.
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered) - 1e-9) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class AppUnderTest:
    """A contender's cache in a fresh directory, seeded with a document, driven by msal."""

    def __init__(self, kind: str, directory: Path, state: str | None, user: str) -> None:
        self.path = directory / CACHE_NAME
        if state is not None:
            write_private(self.path, state)
        self.contender = make_contender(kind, self.path)
        self.authority = LocalAuthority(username=user)
        self.app = self.authority.public_client(token_cache=self.contender.cache)
        (self.account,) = self.app.get_accounts(username=user)

    def hit(self) -> None:
        result = self.app.acquire_token_silent(SCOPES, self.account)
        if not result or "access_token" not in result:
            raise RuntimeError(f"cache hit failed: {result!r}")

    def refresh(self) -> None:
        result = self.app.acquire_token_silent(SCOPES, self.account, force_refresh=True)
        if not result or "access_token" not in result:
            raise RuntimeError(f"forced refresh failed: {result!r}")


# -- single-process workloads ---------------------------------------------------------------


def run_hit(kind: str, state: str, user: str, *, ops: int, seconds: float, tmp_root: str) -> float:
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-hit-") as directory:
        under_test = AppUnderTest(kind, Path(directory), state, user)
        for _ in range(20):
            under_test.hit()
        hits_before = under_test.authority.token_endpoint_hits
        per_call = timed(under_test.hit, ops, seconds, batch=50)
        if under_test.authority.token_endpoint_hits != hits_before:
            raise RuntimeError(f"{kind}: a cache hit reached the token endpoint")
        under_test.contender.finish()
        return per_call


def run_write(
    kind: str, state: str, user: str, *, ops: int, seconds: float, tmp_root: str
) -> tuple[float, float]:
    """Seconds per forced refresh and file writes per forced refresh."""
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-write-") as directory:
        under_test = AppUnderTest(kind, Path(directory), state, user)
        for _ in range(2):
            under_test.refresh()
        writes_before = under_test.contender.writes()
        hits_before = under_test.authority.token_endpoint_hits
        calls = 0

        def op() -> None:
            nonlocal calls
            under_test.refresh()
            calls += 1

        per_call = timed(op, ops, seconds)
        # The recipe's one write at exit belongs to these acquisitions.
        started = time.perf_counter()
        under_test.contender.finish()
        per_call += (time.perf_counter() - started) / calls
        if under_test.authority.token_endpoint_hits - hits_before != calls:
            raise RuntimeError(f"{kind}: forced refreshes did not each reach the authority")
        return per_call, (under_test.contender.writes() - writes_before) / calls


def run_floor(state: str, ops: int, tmp_root: str) -> dict[str, float]:
    """The interoperable write floor: what one write must do to keep the invariants.

    One bare loop, nothing else: create the lock file exclusively, take its OS lock (flock,
    as portalocker does), encode the document compactly with the standard library's C
    encoder, write a temp file, fsync it, ``os.replace`` it over the cache, fsync the
    directory, then unlink and close the lock file. The parts are timed alone too.
    """
    document = json.loads(state)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-floor-") as directory:
        target = os.path.join(directory, CACHE_NAME)
        temp = os.path.join(directory, f".{CACHE_NAME}.tmp")
        lock_path = f"{target}.lockfile"
        lock_flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

        def encode() -> bytes:
            return json.dumps(document, separators=(",", ":")).encode()

        def lock() -> int:
            fd = os.open(lock_path, lock_flags, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd

        def unlock(fd: int) -> None:
            os.unlink(lock_path)
            os.close(fd)

        def write(data: bytes) -> None:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

        def floor() -> None:
            fd = lock()
            try:
                write(encode())
            finally:
                unlock(fd)

        data = encode()
        return {
            "floor": timed(floor, ops, 30.0),
            "encode": timed(encode, ops, 30.0),
            "lock": timed(lambda: unlock(lock()), ops * 10, 5.0, batch=10),
            "write": timed(lambda: write(data), ops, 30.0),
            "bytes": float(len(data)),
        }


# -- multi-process workloads ----------------------------------------------------------------


def run_processes(
    pool: WorkerPool,
    kind: str,
    processes: int,
    *,
    refreshes: int,
    tmp_root: str,
    timeout: float,
    instrument: bool = False,
) -> dict[str, Any]:
    """P workers of the pool on one fresh cache file, released together by the barrier."""
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-procs-") as directory:
        path = Path(directory) / CACHE_NAME
        commands = [
            {
                "kind": kind,
                "path": str(path),
                "user": username(index + 1),
                "refreshes": refreshes,
                "max_seconds": timeout / 2,
                "instrument": instrument,
            }
            for index in range(processes)
        ]
        outcomes = pool.round(commands, timeout)
        return _collect(kind, path, outcomes)


def _collect(kind: str, path: Path, outcomes: list[Outcome]) -> dict[str, Any]:
    errors: list[str] = []
    for outcome in outcomes:
        if outcome.failure is not None:
            errors.append(outcome.failure)
        if outcome.report is not None:
            errors.extend(outcome.report["errors"])
    lock_give_ups = sum(o.stderr.count("failed to create lock file") for o in outcomes)

    good = [o.report for o in outcomes if o.report is not None]
    latencies = [lat for r in good for lat in r["latencies"]]
    failed = sum(len(r["errors"]) for r in good)
    acquisitions = len(latencies) - failed
    wall = (max(r["end"] for r in good) - min(r["start"] for r in good)) if good else float("nan")

    lost: int | None = None
    lost_accounts: int | None = None
    file_state = "n/a (not persisted)"
    if kind != MEMORY:
        refresh_tokens: set[str] = set()
        home_accounts: set[str] = set()
        try:
            document = json.loads(path.read_bytes())
            refresh_tokens = {e.get("secret") for e in document.get("RefreshToken", {}).values()}
            home_accounts = {e.get("home_account_id") for e in document.get("Account", {}).values()}
            file_state = "ok"
        except FileNotFoundError:
            file_state = "missing"
        except ValueError:
            file_state = "corrupt"
        authority = LocalAuthority()
        lost = 0
        lost_accounts = 0
        for index, outcome in enumerate(outcomes):
            report = outcome.report
            if report is None or report["last_refresh_token"] not in refresh_tokens:
                lost += 1
            if authority.home_account_id(username(index + 1)) not in home_accounts:
                lost_accounts += 1
    locks = [r["lock"] for r in good if "lock" in r]
    intervals = sorted(
        (start, end, index)
        for index, r in enumerate(good)
        for start, end, _ in r.get("lock_intervals", [])
        if end
    )
    hold_cpu = sum(cpu for r in good for _, end, cpu in r.get("lock_intervals", []) if end)
    return {
        **lock_timeline(intervals, wall),
        "lock_hold_cpu": hold_cpu,
        "meters": [r["meter"] for r in good if "meter" in r],
        "wall": wall,
        "acquisitions": acquisitions,
        "rate": acquisitions / wall if good and wall > 0 else float("nan"),
        "latencies": latencies,
        "errors": errors,
        "lost": lost,
        "lost_accounts": lost_accounts,
        "file": file_state,
        "lock_give_ups": lock_give_ups,
        "writes": sum(r["writes"] for r in good),
        # CPU of every worker (holders and waiters) per acquisition: what waiting costs on
        # a machine whose cores the holder needs.
        "cpu_per_acquisition": sum(r.get("cpu", 0.0) for r in good) / max(acquisitions, 1),
        "lock_contended": sum(lock["contended"] for lock in locks),
        "lock_acquisitions": sum(lock["acquisitions"] for lock in locks),
        "lock_waited": sum(lock["waited"] for lock in locks),
    }


def lock_timeline(intervals: list[tuple[float, float, int]], wall: float) -> dict[str, Any]:
    """What all workers' lock-holding intervals say about the handoff.

    ``busy``: share of the wall time some process held the lock. ``gaps``: time from one
    release to the next acquisition (the handoff), in order. ``overlaps``: acquisitions made
    while another process still held the lock, which mutual exclusion forbids. ``same``:
    acquisitions by the process that held the lock just before (barging: the releaser
    re-takes the lock while others wait).
    """
    gaps: list[float] = []
    overlaps = 0
    same = 0
    held = 0.0
    latest_end = float("-inf")
    previous = None
    for start, end, holder in intervals:
        held += end - start
        if start < latest_end:
            overlaps += 1
        elif previous is not None:
            gaps.append(start - latest_end)
        if holder == previous:
            same += 1
        latest_end = max(latest_end, end)
        previous = holder
    return {
        "lock_held": held,
        "lock_intervals": len(intervals),
        "lock_busy": held / wall if intervals and wall > 0 else float("nan"),
        "handoff_gaps": gaps,
        "lock_overlaps": overlaps,
        "lock_same_holder": same,
    }


# -- the run ------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(settings: Settings, tmp_root: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    progress(f"building caches: 1 account and {LARGE} accounts (real sign-ins, in memory)")
    states = {"small": build_state(1), "large": build_state(LARGE)}
    users = {"small": username(0), "large": username(LARGE // 2)}

    hit: dict[str, dict[str, list[float]]] = {size: {k: [] for k in CONTENDERS} for size in states}
    write: dict[str, dict[str, list[float]]] = {
        size: {k: [] for k in CONTENDERS} for size in states
    }
    writes_per: dict[str, dict[str, list[float]]] = {
        size: {k: [] for k in CONTENDERS} for size in states
    }
    floors: dict[str, list[dict[str, float]]] = {size: [] for size in (*states, "serial")}
    # The serial floor: one interoperable write of the document the biggest contention
    # run ends with (one account per process), per hold, back to back.
    serial_state = build_state(max(settings.contention_procs))
    for rep in range(settings.reps):
        progress(f"single-process workloads, repetition {rep + 1}/{settings.reps}")
        floors["serial"].append(run_floor(serial_state, settings.floor_small_ops, tmp_root))
        for size, state in states.items():
            floor_ops = settings.floor_small_ops if size == "small" else settings.floor_large_ops
            floors[size].append(run_floor(state, floor_ops, tmp_root))
            for kind in rotated(CONTENDERS, rep):
                hit[size][kind].append(
                    run_hit(
                        kind,
                        state,
                        users[size],
                        ops=settings.hit_ops,
                        seconds=settings.hit_seconds,
                        tmp_root=tmp_root,
                    )
                )
                ops, seconds = (
                    (settings.write_small_ops, settings.write_small_seconds)
                    if size == "small"
                    else (settings.write_large_ops, settings.write_large_seconds)
                )
                per_call, per_write = run_write(
                    kind, state, users[size], ops=ops, seconds=seconds, tmp_root=tmp_root
                )
                write[size][kind].append(per_call)
                writes_per[size][kind].append(per_write)
    results["hit"] = {s: {k: median(v) for k, v in d.items()} for s, d in hit.items()}
    results["write"] = {s: {k: median(v) for k, v in d.items()} for s, d in write.items()}
    results["writes_per"] = {s: {k: median(v) for k, v in d.items()} for s, d in writes_per.items()}
    results["floor"] = {
        s: {key: median([f[key] for f in runs]) for key in runs[0]} for s, runs in floors.items()
    }
    results["raw_single"] = {"hit": hit, "write": write}

    contention: dict[int, dict[str, list[dict[str, Any]]]] = {
        p: {k: [] for k in CONTENDERS} for p in settings.contention_procs
    }
    handoff: dict[str, list[dict[str, Any]]] = {k: [] for k in CONTENDERS}
    size = max(*settings.contention_procs, settings.handoff_procs)
    progress(f"starting {size} worker processes")
    with (
        tempfile.TemporaryDirectory(dir=tmp_root, prefix="bench-pool-") as pool_dir,
        WorkerPool(size, Path(pool_dir)) as pool,
    ):
        for rep in range(settings.process_reps):
            for processes in settings.contention_procs:
                progress(f"contention, {processes} processes, repetition {rep + 1}")
                for kind in rotated(CONTENDERS, rep):
                    contention[processes][kind].append(
                        run_processes(
                            pool,
                            kind,
                            processes,
                            refreshes=settings.contention_refreshes,
                            tmp_root=tmp_root,
                            timeout=settings.worker_timeout,
                        )
                    )
            progress(f"lock handoff, {settings.handoff_procs} processes, repetition {rep + 1}")
            for kind in rotated(CONTENDERS, rep):
                handoff[kind].append(
                    run_processes(
                        pool,
                        kind,
                        settings.handoff_procs,
                        refreshes=settings.handoff_refreshes,
                        tmp_root=tmp_root,
                        timeout=settings.worker_timeout,
                    )
                )
    results["contention"] = contention
    results["handoff"] = handoff
    results["states_bytes"] = {s: len(v.encode()) for s, v in states.items()}
    return results


# -- the report ---------------------------------------------------------------------------


def fmt_time(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**MISSED**"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    text = f"{one:.2f} {five:.2f} {fifteen:.2f}"
    cpus = os.cpu_count() or 1
    if one > cpus:
        text += f" (**busy: more runnable tasks than the {cpus} CPUs; timings are noisy**)"
    return text


def source_revision(directory: str) -> str:
    """`, repository at git <commit>[ + uncommitted changes in src/]` (this checkout)."""
    try:
        commit = subprocess.run(
            ["git", "-C", directory, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", directory, "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"; repository at git {commit}" + (" + uncommitted changes in src/" if dirty else "")


def machine_info(tmp_root: str) -> list[tuple[str, str]]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    flavour, description = extensions_lock_flavour()
    try:
        import msal_persist  # noqa: PLC0415

        persist_from = str(Path(msal_persist.__file__).parent)
    except ImportError:
        persist_from = "?"
    persist_from += source_revision(str(HERE.parent))
    return [
        ("host", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("cpu count", str(os.cpu_count())),
        ("load average at start", load_average()),
        ("python", f"{python_version()} ({sys.executable})"),
        ("msal", version("msal")),
        ("msal-extensions", version("msal-extensions")),
        ("portalocker", version("portalocker")),
        ("msal-persist", f"{version('msal-persist')} (imported from {persist_from})"),
        (
            "msal-persist codec",
            f"orjson {version('orjson')} (the 'fast' extra)"
            if version("orjson") != "not installed"
            else "stdlib json (default install)",
        ),
        ("temp dir", f"{tmp_root}: {file_system_of(tmp_root)}"),
        ("msal-extensions lock", f"**{flavour}**: {description}"),
    ]


def report(
    results: dict[str, Any], settings: Settings, info: list[tuple[str, str]], elapsed: float
) -> str:
    out: list[str] = []
    add = out.append
    hit, write, writes_per, floor = (
        results["hit"],
        results["write"],
        results["writes_per"],
        results["floor"],
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    add(f"# msal-persist benchmark ({settings.name} run, {stamp})")
    add("")
    add(f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}` (took {elapsed:.0f} s)")
    add("")
    for key, value in info:
        add(f"- {key}: {value}")
    add(
        f"- repetitions: {settings.reps} (single-process), {settings.process_reps} "
        "(multi-process); figures are medians over repetitions unless stated"
    )
    add(
        f"- cache sizes: 1 account = {results['states_bytes']['small']:,} bytes, "
        f"{LARGE:,} accounts = {results['states_bytes']['large']:,} bytes (msal's indent=4 "
        f"document); compact: {int(floor['small']['bytes']):,} / "
        f"{int(floor['large']['bytes']):,} bytes"
    )
    add("")

    add("## Summary")
    add("")
    out.extend(summary_table(results, settings))
    add("")

    targets: list[tuple[str, str, bool]] = []

    # Single-process table.
    add("## Single process: one `acquire_token_silent` (median per call)")
    add("")
    header = [LABELS[k] for k in CONTENDERS]
    add(
        "| workload | "
        + " | ".join(header)
        + " | persist ÷ in-memory | persist ÷ recipe | msal-ext ÷ persist |"
    )
    add("|---" * (len(header) + 4) + "|")
    names = {"small": "1 account", "large": f"{LARGE:,} accounts"}
    for label, table in (("cache hit", hit), ("forced refresh", write)):
        for size in ("small", "large"):
            row = table[size]
            persist = row[PERSIST]
            add(
                times_row(f"{label}, {names[size]}", row)
                + f" | {fmt_ratio(persist / row[MEMORY])} | {fmt_ratio(persist / row[RECIPE])}"
                f" | {fmt_ratio(row[EXTENSIONS] / persist)} |"
            )
    for size in ("small", "large"):
        row = writes_per[size]
        add(
            f"| file writes per forced refresh, {names[size]} | "
            + " | ".join(
                "0" if k == MEMORY else ("1 at exit" if k == RECIPE else f"{row[k]:.2f}")
                for k in CONTENDERS
            )
            + " | | | |"
        )
    add("")
    add(
        'Ratios: "persist ÷ X" is msal-persist\'s cost relative to X (lower is better); '
        '"msal-ext ÷ persist" is msal-persist\'s speed-up (throughput ratio) over '
        "msal-extensions. The recipe's one write at exit is amortised over its calls."
    )
    add("")

    # Floor table.
    add("## The interoperable write floor, and the write path in multiples of it")
    add("")
    add(
        "The floor is a bare loop doing what one write must do to keep the invariants: lock "
        "file created, OS-locked, unlinked; compact standard-library encode; temp file, "
        "fsync, `os.replace`; directory fsync. Its parts are also timed alone."
    )
    add("")
    add(
        "| cache | floor | lock file alone | encode alone | write alone (temp + fsync + "
        "replace + dir fsync) | in-memory refresh | budget: in-memory + 1.3 x floor "
        "| msal-persist refresh | (persist - in-memory) ÷ floor |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for size in ("small", "large"):
        f = floor[size]
        mem, persist = write[size][MEMORY], write[size][PERSIST]
        budget = mem + 1.3 * f["floor"]
        add(
            f"| {names[size]} | {fmt_time(f['floor'])} | {fmt_time(f['lock'])} | "
            f"{fmt_time(f['encode'])} | {fmt_time(f['write'])} | {fmt_time(mem)} | "
            f"{fmt_time(budget)} | {fmt_time(persist)} | {(persist - mem) / f['floor']:.2f} |"
        )
    add("")

    for size, within in (("small", 1.2), ("large", 1.05)):
        ratio = hit[size][PERSIST] / hit[size][MEMORY]
        targets.append(
            (
                f"cache hit, {names[size]}: within {within}x in-memory",
                f"{ratio:.3f}x ({(ratio - 1) * 100:+.1f} %)",
                ratio <= within,
            )
        )
    for size, needed in (("small", 3.0), ("large", 8.0)):
        f = floor[size]["floor"]
        mem, persist = write[size][MEMORY], write[size][PERSIST]
        budget = mem + 1.3 * f
        targets.append(
            (
                f"forced refresh, {names[size]}: ≤ in-memory + 1.3 x floor",
                (
                    f"{fmt_time(persist)} vs budget {fmt_time(budget)} "
                    f"({(persist - mem) / f:.2f} x floor above in-memory)"
                ),
                persist <= budget,
            )
        )
        speedup = write[size][EXTENSIONS] / persist
        targets.append(
            (
                f"forced refresh, {names[size]}: ≥ {needed}x msal-extensions throughput",
                f"{speedup:.2f}x",
                speedup >= needed,
            )
        )

    # Contention.
    contention = results["contention"]
    add(
        "## Contention: P processes behind a barrier, "
        f"{settings.contention_refreshes} forced refreshes each"
    )
    add("")
    add(
        "| P | contender | wall time | acquisitions/s | lost updates (max) "
        "| lost sign-ins (max) | errors (total) | notes |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for processes, by_kind in contention.items():
        for kind in CONTENDERS:
            runs = by_kind[kind]
            wall = median([r["wall"] for r in runs])
            rate = median([r["rate"] for r in runs])
            if kind == MEMORY:
                lost_text = lost_acc_text = "n/a"
            else:
                lost_text = f"{max(r['lost'] for r in runs)} / {processes}"
                lost_acc_text = f"{max(r['lost_accounts'] for r in runs)} / {processes}"
            errors = sum(len(r["errors"]) for r in runs)
            notes = _process_notes(runs, kind)
            add(
                f"| {processes} | {LABELS[kind]} | {fmt_time(wall)} | {rate:.0f} | {lost_text} "
                f"| {lost_acc_text} | {errors} | {notes} |"
            )
        persist_rate = median([r["rate"] for r in by_kind[PERSIST]])
        ext_rate = median([r["rate"] for r in by_kind[EXTENSIONS]])
        mem_rate = median([r["rate"] for r in by_kind[MEMORY]])
        add(
            f"| {processes} | *msal-persist ÷ msal-extensions* | | "
            f"{fmt_ratio(persist_rate / ext_rate)} | | | | "
            f"persist ÷ in-memory throughput {fmt_ratio(persist_rate / mem_rate)}; "
            f"persist ÷ serial floor {persist_rate * floor['serial']['floor']:.0%} |"
        )
    add("")
    worst_lost = max(
        r["lost"] + r["lost_accounts"] for by_kind in contention.values() for r in by_kind[PERSIST]
    )
    persist_errors = sum(len(r["errors"]) for by in contention.values() for r in by[PERSIST])
    targets.append(
        (
            "contention (P = 2, 8, 32): msal-persist 0 lost updates, 0 errors",
            f"{worst_lost} lost, {persist_errors} errors",
            worst_lost == 0 and persist_errors == 0,
        )
    )
    biggest = max(contention)
    speedup = median([r["rate"] for r in contention[biggest][PERSIST]]) / median(
        [r["rate"] for r in contention[biggest][EXTENSIONS]]
    )
    targets.append(
        (
            f"contention, {biggest} processes: ≥ 4x msal-extensions throughput",
            f"{speedup:.2f}x",
            speedup >= 4,
        )
    )
    serial = floor["serial"]["floor"]
    share = median([r["rate"] for r in contention[biggest][PERSIST]]) * serial
    targets.append(
        (
            (
                f"contention, {biggest} processes: ≥ 70 % of the serial floor "
                f"(1 / {fmt_time(serial)} = {1 / serial:.0f} writes/s)"
            ),
            f"{share:.0%}",
            share >= 0.7,
        )
    )

    # Handoff.
    handoff = results["handoff"]
    add(
        f"## Lock handoff: {settings.handoff_procs} processes, "
        f"{settings.handoff_refreshes} back-to-back forced refreshes each"
    )
    add("")
    add(
        "| contender | p50 | p99 (pooled) | p99 (median of reps) | max | lost updates (max) "
        "| errors | lock (all workers' holding intervals merged) |"
    )
    add("|---|---|---|---|---|---|---|---|")
    for kind in CONTENDERS:
        runs = handoff[kind]
        pooled = [lat for r in runs for lat in r["latencies"]]
        p99_reps = median([percentile(r["latencies"], 99) for r in runs])
        lost_text = "n/a" if kind == MEMORY else str(max(r["lost"] for r in runs))
        errors = sum(len(r["errors"]) for r in runs)
        waits = ""
        if kind in {EXTENSIONS, PERSIST}:
            waits = _lock_note(runs)
        if kind == PERSIST:
            acquisitions = sum(r["lock_acquisitions"] for r in runs)
            contended = sum(r["lock_contended"] for r in runs)
            waited = sum(r["lock_waited"] for r in runs)
            waits += (
                f"; {contended}/{acquisitions} acquisitions waited, mean wait "
                f"{fmt_time(waited / max(contended, 1))}"
            )
        add(
            f"| {LABELS[kind]} | {fmt_time(percentile(pooled, 50))} | "
            f"{fmt_time(percentile(pooled, 99))} | {fmt_time(p99_reps)} | "
            f"{fmt_time(max(pooled) if pooled else float('nan'))} | {lost_text} | {errors} "
            f"| {waits} |"
        )
    add("")
    pooled = [lat for r in handoff[PERSIST] for lat in r["latencies"]]
    p99 = percentile(pooled, 99)
    memory_p99 = percentile([x for r in handoff[MEMORY] for x in r["latencies"]], 99)
    targets.append(
        (
            f"lock handoff, {settings.handoff_procs} processes: p99 < 20 ms",
            f"p99 {fmt_time(p99)} (in-memory: {fmt_time(memory_p99)})",
            p99 < 0.020,
        )
    )

    add("## Targets (DESIGN.md)")
    add("")
    add("| target | measured | verdict |")
    add("|---|---|---|")
    for name, measured, ok in targets:
        add(f"| {name} | {measured} | {verdict(ok)} |")
    add("")
    add(
        "Not measured here: the `kill -9` durability target (30 kills during writes), "
        "which belongs to the crash tests."
    )
    add("")
    add("How to read the multi-process tables:")
    add("")
    add(
        "- *lost updates*: workers whose last refresh token (as issued to them by the "
        "authority) is not in the final file; *lost sign-ins*: workers whose account is "
        "missing from it. The in-memory contender persists nothing (n/a)."
    )
    add(
        "- *errors*: failed acquisitions plus workers that failed. `acquire_token_silent "
        "returned None` means msal found no refresh token for the signed-in account in what "
        "the cache read (for msal-extensions: a read of a file a peer had just truncated to "
        "rewrite in place); a real application would prompt the user to sign in again. "
        "Acquisitions/s counts successful acquisitions only."
    )
    add(
        "- *lock* notes merge every worker's lock-holding intervals (msal-extensions holds its "
        "lock once per `modify()`, four times per refresh): share of wall time held, mean "
        "hold (and CPU used while holding), gap from a release to the next acquisition, how "
        "often the process that just released took the lock again while others waited, and "
        "overlapping holds (two holders at once: mutual exclusion broken)."
    )
    errors = [
        f"{LABELS[kind]} P={p}: {e}"
        for p, by in contention.items()
        for kind, runs in by.items()
        for r in runs
        for e in r["errors"]
    ] + [
        f"{LABELS[kind]} handoff: {e}"
        for kind, runs in handoff.items()
        for r in runs
        for e in r["errors"]
    ]
    if errors:
        add("")
        add(f"First errors reported by workers ({len(errors)} in total):")
        add("")
        seen: set[str] = set()
        for error in errors:
            if error not in seen and len(seen) < 8:
                seen.add(error)
                add(f"- `{error}`")
    add("")
    return "\n".join(out)


def times_row(label: str, row: dict[str, float]) -> str:
    """The start of a table row: the label and each contender's time, in column order."""
    return f"| {label} | " + " | ".join(fmt_time(row[k]) for k in CONTENDERS)


def summary_table(results: dict[str, Any], settings: Settings) -> list[str]:
    """The headline table (the README's): each workload side by side, and the write floor."""
    hit, write, floor = results["hit"], results["write"], results["floor"]
    rows = [
        (
            "| workload | in-memory | recipe | msal-extensions | msal-persist | write floor "
            "| msal-persist vs msal-extensions |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    names = {"small": "1 account", "large": f"{LARGE:,} accounts"}
    for size in ("small", "large"):
        row = hit[size]
        rows.append(
            times_row(f"cache hit, {names[size]}", row)
            + f" | | {fmt_ratio(row[EXTENSIONS] / row[PERSIST])} "
            f"({fmt_ratio(row[PERSIST] / row[MEMORY])} in-memory) |"
        )
    for size in ("small", "large"):
        row = write[size]
        persist, mem = row[PERSIST], row[MEMORY]
        rows.append(
            times_row(f"forced refresh, {names[size]}", row)
            + f" | {fmt_time(floor[size]['floor'])} | **{fmt_ratio(row[EXTENSIONS] / persist)} "
            f"faster** (in-memory + {(persist - mem) / floor[size]['floor']:.2f} x floor) |"
        )
    serial = floor["serial"]["floor"]
    for processes, by_kind in results["contention"].items():
        cells = []
        for kind in CONTENDERS:
            runs = by_kind[kind]
            rate = median([r["rate"] for r in runs])
            errors = sum(len(r["errors"]) for r in runs)
            lost = "n/a" if kind == MEMORY else f"{max(r['lost'] for r in runs)} of {processes}"
            cells.append(f"{rate:.0f} · {lost} · {errors}")
        persist_rate = median([r["rate"] for r in by_kind[PERSIST]])
        ext_rate = median([r["rate"] for r in by_kind[EXTENSIONS]])
        label = (
            f"{processes} processes x {settings.contention_refreshes} refreshes: "
            "acquisitions/s · lost · errors"
        )
        rows.append(
            f"| {label} | "
            + " | ".join(cells)
            + f" | {1 / serial:.0f} (serial) | **{fmt_ratio(persist_rate / ext_rate)}** "
            f"({persist_rate * serial:.0%} of the serial floor) |"
        )
    handoff = results["handoff"]
    cells = []
    for kind in CONTENDERS:
        pooled = [lat for r in handoff[kind] for lat in r["latencies"]]
        cells.append(
            " / ".join(
                fmt_time(v) for v in (percentile(pooled, 50), percentile(pooled, 99), max(pooled))
            )
        )
    rows.append(
        f"| lock handoff, {settings.handoff_procs} processes x {settings.handoff_refreshes}: "
        "p50 / p99 / max | " + " | ".join(cells) + " | | |"
    )
    return rows


def _process_notes(runs: list[dict[str, Any]], kind: str) -> str:
    notes = []
    bad_files = [r["file"] for r in runs if r["file"] not in {"ok", "n/a (not persisted)"}]
    if bad_files:
        notes.append(f"final file {', '.join(sorted(set(bad_files)))} in {len(bad_files)} runs")
    if kind == EXTENSIONS:
        give_ups = sum(r["lock_give_ups"] for r in runs)
        if give_ups:
            notes.append(f"{give_ups} lock-file give-ups (5 s)")
    if kind in {EXTENSIONS, PERSIST}:
        writes = median([r["writes"] / max(r["acquisitions"], 1) for r in runs])
        notes.append(f"{writes:.2f} writes/acq (incl. sign-in)")
        cpu = median([r["cpu_per_acquisition"] for r in runs])
        notes.append(f"CPU of all workers {fmt_time(cpu)}/acq")
        notes.append(_lock_note(runs))
    return "; ".join(notes)


def _lock_note(runs: list[dict[str, Any]]) -> str:
    busy = median([r["lock_busy"] for r in runs])
    gaps = [g for r in runs for g in r["handoff_gaps"]]
    overlaps = sum(r["lock_overlaps"] for r in runs)
    hold = sum(r["lock_held"] for r in runs) / max(sum(r["lock_intervals"] for r in runs), 1)
    cpu = sum(r["lock_hold_cpu"] for r in runs) / max(sum(r["lock_intervals"] for r in runs), 1)
    text = (
        f"lock held {busy:.0%} of wall, mean hold {fmt_time(hold)} (CPU {fmt_time(cpu)}), "
        "handoff gap p50 "
        f"{fmt_time(percentile(gaps, 50))} / p99 {fmt_time(percentile(gaps, 99))}"
    )
    same = sum(r["lock_same_holder"] for r in runs)
    total = sum(r["lock_intervals"] for r in runs)
    text += f", next holder = previous holder in {same / max(total, 1):.0%}"
    if overlaps:
        text += f", **{overlaps} overlapping holds**"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (< 3 minutes)")
    parser.add_argument("--tmpdir", help="where the temporary cache directories go")
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown report file")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="msal-persist-bench-") as tmp_root:
        info = machine_info(tmp_root)
        results = measure(settings, tmp_root)
        info.insert(3, ("load average at end", load_average()))
        text = report(results, settings, info, time.monotonic() - started)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text + "\n", encoding="utf-8")
    raw = args.output.with_suffix(".json")
    raw.write_text(json.dumps({"info": info, "results": results}, default=str), encoding="utf-8")
    progress(f"wrote {args.output} and {raw.name} (raw figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
