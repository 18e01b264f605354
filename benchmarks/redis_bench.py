"""The Redis store beside in-memory msal and the file store: hits, refreshes, processes.

    python benchmarks/redis_bench.py [--quick] [--output FILE]

Starts its own ``redis-server`` (127.0.0.1, a free port, a temp dir, no persistence) and
stops it at the end. Prints one Markdown table; ratios are against in-memory msal on the
same machine in the same run (absolute times are noise on a shared machine).

- cache hit: ``acquire_token_silent`` answered from the cache, with the local copy (a hit
  checks the invalidation stamp, no round trip) and without it (a GET per cache access);
- forced refresh: ``acquire_token_silent(force_refresh=True)``, with the Redis commands
  and the writes per acquisition the store counted;
- P processes x 20 forced refreshes on one key and on one key per user: acquisitions per
  second from the start barrier to the last process's end, lost refresh tokens, errors.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msal
import redis

from msal_persist import PersistedTokenCache, RedisPartitions, RedisStore
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

ROUNDS = 20
PROCESSES = (8, 32)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, directory: Path) -> None:
        program = shutil.which("redis-server")
        if program is None:
            sys.exit("redis-server is missing: sudo apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        command = [program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(directory), "--logfile", ""]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit("redis-server did not start")
                time.sleep(0.02)
        self.client = client

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def timed(op: Callable[[], object], ops: int, seconds: float, batch: int = 50) -> float:
    gc.collect()
    calls = 0
    start = time.perf_counter()
    while calls < ops:
        for _ in range(batch):
            op()
        calls += batch
        if calls >= 2 * batch and time.perf_counter() - start > seconds:
            break
    return (time.perf_counter() - start) / calls


def build(kind: str, url: str, directory: Path, key: str) -> tuple[Any, Any, Any]:
    """(cache, store or None) of one contender: memory, file, redis, redis-no-copy."""
    if kind == "memory":
        return msal.SerializableTokenCache(), None, None
    if kind == "file":
        cache = PersistedTokenCache(directory / f"{key}.json")
        return cache, cache.store, None
    store = RedisStore(url, key, local_copy=kind == "redis")
    return PersistedTokenCache(store=store), store, store


class Under:
    def __init__(self, kind: str, url: str, directory: Path, key: str) -> None:
        self.cache, self.store, self.redis = build(kind, url, directory, key)
        self.authority = LocalAuthority(username="ada@example.test")
        self.app = self.authority.public_client(token_cache=self.cache)
        self.authority.sign_in(self.app)
        (self.account,) = self.app.get_accounts()

    def hit(self) -> None:
        result = self.app.acquire_token_silent(DEFAULT_SCOPES, self.account)
        if result.get("token_source") != "cache":
            raise RuntimeError(f"not a cache hit: {result!r}")

    def refresh(self) -> None:
        result = self.app.acquire_token_silent(DEFAULT_SCOPES, self.account, force_refresh=True)
        if "access_token" not in result:
            raise RuntimeError(f"refresh failed: {result!r}")


def single(url: str, directory: Path, quick: bool) -> dict[str, dict[str, float]]:
    kinds = ("memory", "file", "redis", "redis-no-copy")
    reps = 3 if quick else 5
    hit_ops, hit_s = (2000, 0.3) if quick else (10000, 1.0)
    ref_ops, ref_s = (100, 0.6) if quick else (400, 2.0)
    samples: dict[str, dict[str, list[float]]] = {k: {"hit": [], "refresh": []} for k in kinds}
    per_acq: dict[str, dict[str, float]] = {}
    for rep in range(reps):
        order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]
        for kind in order:
            under = Under(kind, url, directory, f"bench-{kind}-{rep}")
            if under.redis is not None and kind == "redis":
                deadline = time.monotonic() + 5
                while not under.redis.local_copy and time.monotonic() < deadline:
                    time.sleep(0.01)
            for _ in range(20):
                under.hit()
            sent = under.redis.round_trips if under.redis else 0
            samples[kind]["hit"].append(timed(under.hit, hit_ops, hit_s))
            hit_trips = (under.redis.round_trips - sent) if under.redis else 0
            under.refresh()
            saves = under.store.saves if under.store else 0
            sent = under.redis.round_trips if under.redis else 0
            start_hits = under.authority.token_endpoint_hits
            samples[kind]["refresh"].append(timed(under.refresh, ref_ops, ref_s, batch=10))
            done = under.authority.token_endpoint_hits - start_hits
            per_acq[kind] = {
                "hit_round_trips": hit_trips,
                "round_trips": ((under.redis.round_trips - sent) / done) if under.redis else 0,
                "writes": ((under.store.saves - saves) / done) if under.store else 0,
            }
            if under.redis is not None:
                under.redis.close()
    return {
        kind: {
            "hit": statistics.median(samples[kind]["hit"]),
            "refresh": statistics.median(samples[kind]["refresh"]),
            **per_acq[kind],
        }
        for kind in kinds
    }


def worker(url: str, key: str, user: str, rounds: str, barrier: str, parties: str) -> None:  # noqa: PLR0917
    authority = LocalAuthority(username=user)
    if key == "per-user":
        store = RedisPartitions(url, prefix="bench:").for_user(authority.home_account_id(user))
    else:
        store = RedisStore(url, key)
    app = authority.public_client(token_cache=PersistedTokenCache(store=store))
    authority.sign_in(app, user)
    (account,) = app.get_accounts(username=user)
    with open(barrier, "a") as handle:
        handle.write(".")
    while os.stat(barrier).st_size < int(parties):
        time.sleep(0.001)
    start, last, errors = time.time(), None, 0
    for _ in range(int(rounds)):
        try:
            result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)
            last = result["refresh_token"]
        except Exception:  # counted, reported
            errors += 1
    end = time.time()
    print(json.dumps({"user": user, "last": last, "errors": errors, "start": start, "end": end}))


def processes(url: str, directory: Path, count: int, layout: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    barrier = directory / f"barrier-{layout}-{count}"
    key = "bench-shared" if layout == "one key" else "per-user"
    commands = [
        [
            sys.executable,
            __file__,
            "--worker",
            url,
            key,
            f"user{i}@example.test",
            str(ROUNDS),
            str(barrier),
            str(count),
        ]
        for i in range(count)
    ]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, text=True) for c in commands]
    reports, failed = [], 0
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed += 1
            continue
        reports.append(json.loads(out))
    errors = failed + sum(r["errors"] for r in reports)
    authority = LocalAuthority()
    final: dict[str, set[str]] = {}
    partitions = RedisPartitions(url, prefix="bench:")
    documents = (
        [client.get(key)]
        if key != "per-user"
        else [client.get(partitions.key(authority.home_account_id(r["user"]))) for r in reports]
    )
    for document in documents:
        for entry in json.loads(document or b"{}").get("RefreshToken", {}).values():
            final.setdefault(entry["home_account_id"], set()).add(entry["secret"])
    lost = count - len(reports)
    for report in reports:
        if final.get(authority.home_account_id(report["user"])) != {report["last"]}:
            lost += 1
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    done = sum(ROUNDS - r["errors"] for r in reports)
    return {"rate": done / wall, "lost": lost, "errors": errors}


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def report(
    single_: dict[str, dict[str, float]], multi: list[tuple[str, int, dict[str, Any]]]
) -> str:
    memory = single_["memory"]
    labels = {
        "memory": "in-memory msal",
        "file": "msal-persist file store",
        "redis": "Redis store (local copy)",
        "redis-no-copy": "Redis store, local copy off",
    }
    lines = [
        "### Redis store (`python benchmarks/redis_bench.py`)",
        "",
        (
            "| cache | hit | hit vs in-memory | round trips per hit | forced refresh | "
            "refresh vs in-memory | round trips per refresh | writes per refresh |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, label in labels.items():
        row = single_[kind]
        is_redis = kind.startswith("redis")
        hit_trips = f"{row['hit_round_trips']:.0f}" if is_redis else "-"
        trips = f"{row['round_trips']:.2f}" if is_redis else "-"
        writes = f"{row['writes']:.2f}" if kind != "memory" else "-"
        lines.append(
            f"| {label} | {fmt(row['hit'])} | {row['hit'] / memory['hit']:.2f}x | {hit_trips} | "
            f"{fmt(row['refresh'])} | {row['refresh'] / memory['refresh']:.2f}x | {trips} | "
            f"{writes} |"
        )
    lines += [
        "",
        "Round trips per hit: commands sent by the store during the whole timed hit loop.",
        "",
        f"| Redis store, P processes x {ROUNDS} refreshes | acquisitions/s | lost | errors |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {layout}, P = {count} | {row['rate']:.0f} | {row['lost']} | {row['errors']} |"
        for layout, count, row in multi
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--output", type=Path, help="also write the table here")
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="redis-bench-") as tmp:
        directory = Path(tmp)
        server = Server(directory)
        try:
            print("redis bench: single process...", file=sys.stderr, flush=True)
            single_ = single(server.url, directory, args.quick)
            multi = []
            for layout in ("one key", "per-user keys"):
                for count in PROCESSES:
                    print(f"redis bench: {layout}, P = {count}...", file=sys.stderr, flush=True)
                    multi.append((layout, count, processes(server.url, directory, count, layout)))
        finally:
            server.stop()
    table = report(single_, multi)
    print(table)
    if args.output:
        args.output.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
