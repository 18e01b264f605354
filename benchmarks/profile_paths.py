"""Where msal-persist's time goes on the single-process paths the targets constrain.

Usage::

    python benchmarks/profile_paths.py [hit|write|write-large|all] [--cprofile N]

For each path it times msal-persist against in-memory msal on the same cache, and breaks
msal-persist's cost down by wrapping (on the instance, or on ``os`` for system calls) the
functions that matter: the cross-process lock, the reload under the lock, encoding, the
save and its system calls. Times are cumulative per call of ``acquire_token_silent`` (nested
entries are included in their parents). ``--cprofile N`` also prints cProfile's top N
functions by internal time (cProfile inflates small functions; use it for the shape, the
wrappers for the figures).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from _common import MEMORY, PERSIST, Meter, build_state, username
from msal_persist import _token_cache
from run import AppUnderTest


def per_call(op: Callable[[], None], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        op()
    return (time.perf_counter() - started) / calls


def profile(path_name: str, accounts: int, calls: int, cprofile_top: int, tmp: Path) -> None:
    state = build_state(accounts)
    user = username(accounts // 2)
    op_name = "hit" if path_name == "hit" else "refresh"
    print(f"\n## {path_name}: {accounts} account(s), {calls} calls of acquire_token_silent")
    baseline: dict[str, float] = {}
    for kind in (MEMORY, PERSIST):
        directory = tmp / f"{path_name}-{kind}"
        directory.mkdir()
        under_test = AppUnderTest(kind, directory, state, user)
        op = getattr(under_test, op_name)
        for _ in range(20):
            op()
        baseline[kind] = min(per_call(op, calls) for _ in range(3))
        if kind == MEMORY:
            continue
        cache = under_test.contender.cache
        meter = Meter()
        meter.wrap(cache.store.lock, "acquire", "lock.acquire")
        meter.wrap(cache.store.lock, "release", "lock.release")
        meter.wrap(cache, "_sync_locked", "_sync_locked (reload + queued add)")
        meter.wrap(cache.store, "load", "  store.load")
        meter.wrap(cache, "_commit_locked", "_commit_locked (encode + save)")
        meter.wrap(cache.store, "save", "  store.save")
        meter.wrap(_token_cache.json, "dumps", "  json.dumps (all callers)")
        meter.wrap(os, "fsync", "    os.fsync (file + directory)")
        meter.wrap(os, "replace", "    os.replace")
        meter.wrap(os, "stat", "os.stat (all callers)")
        meter.wrap(os, "open", "os.open (all callers)")
        meter.wrap(os, "unlink", "os.unlink (lock file)")
        try:
            meter.reset()
            started = time.perf_counter()
            for _ in range(calls):
                op()
            total = (time.perf_counter() - started) / calls
        finally:
            meter.undo()
        print(
            f"in-memory {baseline[MEMORY] * 1e6:.1f} µs, msal-persist "
            f"{baseline[PERSIST] * 1e6:.1f} µs ({baseline[PERSIST] / baseline[MEMORY]:.2f}x, "
            f"+{(baseline[PERSIST] - baseline[MEMORY]) * 1e6:.1f} µs); with wrappers "
            f"{total * 1e6:.1f} µs"
        )
        print(f"| {'function':38} | calls/op | µs/op | share of msal-persist |")
        print(f"|{'-' * 40}|---|---|---|")
        for label, spent in meter.time.items():
            if meter.calls[label]:
                print(
                    f"| {label:38} | {meter.calls[label] / calls:.2f} | "
                    f"{spent / calls * 1e6:.1f} | {spent / calls / total:.0%} |"
                )
        if cprofile_top:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                op()
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(
                cprofile_top
            )


def profile_contention(tmp: Path, rounds: int) -> None:
    """msal-persist under contention: where the lock holder's time and the waiters' go."""
    from _pool import WorkerPool  # noqa: PLC0415
    from run import percentile, run_processes  # noqa: PLC0415

    for processes, refreshes in ((8, 25), (32, 20)):
        with WorkerPool(processes, tmp) as pool:
            runs = [
                run_processes(
                    pool,
                    PERSIST,
                    processes,
                    refreshes=refreshes,
                    tmp_root=str(tmp),
                    timeout=120.0,
                    instrument=True,
                )
                for _ in range(rounds)
            ]
        acquisitions = sum(r["acquisitions"] for r in runs)
        holds = sum(r["lock_intervals"] for r in runs)
        latencies = [x for r in runs for x in r["latencies"]]
        gaps = [g for r in runs for g in r["handoff_gaps"]]
        totals: dict[str, float] = {}
        calls: dict[str, int] = {}
        for r in runs:
            for meter in r["meters"]:
                for label, spent in meter["time"].items():
                    totals[label] = totals.get(label, 0.0) + spent
                    calls[label] = calls.get(label, 0) + meter["calls"][label]
        hold = sum(r["lock_held"] for r in runs) / holds
        cpu_all = median_of(r["cpu_per_acquisition"] for r in runs)
        cpu = sum(r["lock_hold_cpu"] for r in runs) / holds
        print(
            f"\n## contention: {processes} processes x {refreshes} forced refreshes, "
            f"{rounds} rounds (msal-persist, instrumented)"
        )
        print(
            f"acquisitions/s {median_of(r['rate'] for r in runs):.0f}; latency p50 "
            f"{percentile(latencies, 50) * 1e3:.2f} ms, p99 {percentile(latencies, 99) * 1e3:.2f}"
            f" ms; lock held {median_of(r['lock_busy'] for r in runs):.0%} of wall"
        )
        print(
            f"per hold: wall {hold * 1e3:.2f} ms, of which on CPU {cpu * 1e3:.2f} ms; handoff gap "
            f"p50 {percentile(gaps, 50) * 1e3:.2f} ms, p99 {percentile(gaps, 99) * 1e3:.2f} ms; "
            f"next holder = previous holder in "
            f"{sum(r['lock_same_holder'] for r in runs) / holds:.0%} of holds; CPU of all "
            f"workers per acquisition {cpu_all * 1e3:.2f} ms"
        )
        print("| function | calls/acquisition | ms/acquisition |")
        print("|---|---|---|")
        for label, spent in totals.items():
            print(
                f"| {label} | {calls[label] / acquisitions:.2f} | "
                f"{spent / acquisitions * 1e3:.3f} |"
            )


def median_of(values: Iterable[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    choices = ["hit", "write", "write-large", "contention", "all"]
    parser.add_argument("path", nargs="?", default="all", choices=choices)
    parser.add_argument("--cprofile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    plan = {
        "hit": [("hit", 1, 20000)],
        "write": [("write", 1, 1000)],
        "write-large": [("write-large", 2000, 20)],
    }
    if args.path == "contention":
        with tempfile.TemporaryDirectory(prefix="msal-persist-profile-") as tmp:
            profile_contention(Path(tmp), rounds=3)
        return 0
    chosen = (
        [item for items in plan.values() for item in items]
        if args.path == "all"
        else plan[args.path]
    )
    with tempfile.TemporaryDirectory(prefix="msal-persist-profile-") as tmp:
        for name, accounts, calls in chosen:
            profile(name, accounts, calls, args.cprofile, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
