"""Refresh stampede: P processes whose shared access token has just expired ask at once.

    python benchmarks/stampede.py [--quick] [--latency SECONDS] [--tmpdir DIR]

For each contender (msal-extensions, msal-persist's file store with coordination off and on,
its Redis store with coordination off and on) and each P (8 and 32), P fresh processes open
the same cache, which holds a signed-in user whose access token msal treats as expired, wait
on one barrier and call ``acquire_token_silent`` once. The Redis rows use a ``redis-server``
the script starts (127.0.0.1, a free port, no persistence; see ``redis_bench.py``), one key
per run.
Each process's ``LocalAuthority`` counts the requests that reached it and answers after
``--latency`` seconds (a real token endpoint is not instant; 0 hides the stampede's cost).

Reported per row, the median over the repetitions: token-endpoint requests (all processes),
how many processes took their token from the cache, and wall time from the barrier's
release to the last process holding its token. Before that, the cost of a cache hit through
``coordinate_refreshes`` against the same call on a plain application (coordination must
cost nothing until msal decides to refresh). Prints Markdown, with the range of the
one-minute load average seen at the end of the runs (wall times mean little under load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msal

from msal_persist import PersistedTokenCache, coordinate_refreshes
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

EXTENSIONS = "msal-extensions"
PERSIST_OFF = "msal-persist, coordination off"
PERSIST_ON = "msal-persist, coordination on"
REDIS_OFF = "msal-persist Redis, coordination off"
REDIS_ON = "msal-persist Redis, coordination on"
CONTENDERS = (EXTENSIONS, PERSIST_OFF, PERSIST_ON, REDIS_OFF, REDIS_ON)
REDIS_KINDS = (REDIS_OFF, REDIS_ON)
SIZES = (8, 32)
EXPIRED = 60  # seconds of life: msal wants 5 minutes left, so this one is expired at once
BARRIER_TIMEOUT = 120.0


def expired_document() -> str:
    """A cache document with one signed-in user whose access token has expired."""
    authority = LocalAuthority(access_token_lifetime=EXPIRED)
    cache = msal.SerializableTokenCache()
    authority.sign_in(authority.public_client(token_cache=cache))
    return cache.serialize()


def seed(path: Path) -> None:
    """Write the expired cache document to a new file (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(expired_document())


def worker(kind: str, cache_path: str, barrier: str, parties: int, latency: float) -> None:
    """One process of the stampede: open the cache, wait for all, get a token silently.

    ``cache_path`` is ``<URL>#<key>`` for the Redis contenders.
    """
    authority = LocalAuthority()
    authority.token_delay = latency
    if kind == EXTENSIONS:
        import msal_extensions  # noqa: PLC0415 - only its own workers pay for it

        cache: Any = msal_extensions.PersistedTokenCache(
            msal_extensions.FilePersistence(cache_path)
        )
    elif kind in REDIS_KINDS:
        from msal_persist import RedisStore  # noqa: PLC0415 - the redis extra

        url, key = cache_path.split("#", 1)
        cache = PersistedTokenCache(store=RedisStore(url, key), coordinate_refresh=kind == REDIS_ON)
    else:
        cache = PersistedTokenCache(cache_path, coordinate_refresh=kind == PERSIST_ON)
    app = authority.public_client(token_cache=cache)
    if kind != EXTENSIONS:
        coordinate_refreshes(app)
    account = app.get_accounts()[0]
    with open(barrier, "a") as arrivals:
        arrivals.write(".")
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while os.stat(barrier).st_size < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("barrier")
        time.sleep(0.001)
    started = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of the host
    result = app.acquire_token_silent(DEFAULT_SCOPES, account)
    ended = time.monotonic()
    print(
        json.dumps(
            {
                "hits": authority.token_endpoint_hits,
                "source": (result or {}).get("token_source"),
                "started": started,
                "ended": ended,
            }
        )
    )


def one_run(
    kind: str, processes: int, latency: float, tmp_root: str, server: Any
) -> dict[str, Any]:
    """Run one stampede; return requests, cache-served processes, wall time, failures."""
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="stampede-") as directory:
        barrier = Path(directory) / "barrier"
        if kind in REDIS_KINDS:
            key = f"stampede-{uuid.uuid4().hex[:8]}"
            server.client.set(key, expired_document())
            where = f"{server.url}#{key}"
        else:
            cache_path = Path(directory) / "token_cache.json"
            seed(cache_path)
            where = str(cache_path)
        command = [sys.executable, __file__, "--worker", kind, where, str(barrier)]
        command += [str(processes), str(latency)]
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(processes)
        ]
        reports, failures = [], 0
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            if proc.returncode == 0:
                reports.append(json.loads(out))
            else:
                failures += 1
                print(f"worker failed: {err[-2000:]}", file=sys.stderr)
        if kind in REDIS_KINDS:
            server.client.flushall()  # the key, and any lease or record a run left
    load = os.getloadavg()[0]
    if not reports:
        return {"hits": 0, "cache": 0, "wall": float("nan"), "failures": failures, "load": load}
    return {
        "hits": sum(r["hits"] for r in reports),
        "cache": sum(r["source"] == "cache" for r in reports),
        "wall": max(r["ended"] for r in reports) - min(r["started"] for r in reports),
        "failures": failures + sum(r["source"] is None for r in reports),
        "load": load,
    }


def hit_cost(rounds: int, tmp_root: str) -> tuple[float, float]:
    """Best per-call time of a cache hit: (plain app, app through coordinate_refreshes)."""
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="hit-") as directory:
        path = Path(directory) / "token_cache.json"
        authority = LocalAuthority()
        plain = authority.public_client(token_cache=PersistedTokenCache(path))
        authority.sign_in(plain)
        account = plain.get_accounts()[0]
        coordinated = coordinate_refreshes(
            authority.public_client(token_cache=PersistedTokenCache(path))
        )
        best = {"plain": float("inf"), "coordinated": float("inf")}
        calls = 2000
        for _ in range(rounds):  # alternating, so that load on the machine hits both alike
            for name, app in (("plain", plain), ("coordinated", coordinated)):
                started = time.perf_counter()
                for _ in range(calls):
                    app.acquire_token_silent(DEFAULT_SCOPES, account)
                best[name] = min(best[name], (time.perf_counter() - started) / calls)
        assert authority.token_endpoint_hits == 1
    return best["plain"], best["coordinated"]


def measure(repetitions: int, latency: float, tmp_root: str, server: Any) -> list[dict[str, Any]]:
    """Every contender at every size, ``repetitions`` times in rotation; medians per row."""
    rows = []
    for processes in SIZES:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in CONTENDERS}
        for rep in range(repetitions):
            order = CONTENDERS[rep % len(CONTENDERS) :] + CONTENDERS[: rep % len(CONTENDERS)]
            for kind in order:
                print(f"stampede: {kind}, P={processes}, run {rep + 1}", file=sys.stderr)
                runs[kind].append(one_run(kind, processes, latency, tmp_root, server))
        for kind in CONTENDERS:
            done = runs[kind]
            rows.append(
                {
                    "contender": kind,
                    "processes": processes,
                    "hits": statistics.median(r["hits"] for r in done),
                    "hits_range": (min(r["hits"] for r in done), max(r["hits"] for r in done)),
                    "cache": statistics.median(r["cache"] for r in done),
                    "wall": statistics.median(r["wall"] for r in done),
                    "failures": sum(r["failures"] for r in done),
                    "loads": [r["load"] for r in done],
                }
            )
    return rows


def table(
    rows: list[dict[str, Any]], repetitions: int, latency: float, hit: tuple[float, float]
) -> str:
    """The Markdown report."""
    plain, coordinated = hit
    loads = [load for row in rows for load in row["loads"]]
    lines = [
        "### Cache hit through `coordinate_refreshes`",
        "",
        (
            f"Best of alternating rounds of 2,000 calls: plain app {plain * 1e6:.1f} µs, "
            f"coordinated app {coordinated * 1e6:.1f} µs ({coordinated / plain:.2f}x)."
        ),
        "",
        "### Refresh stampede (`benchmarks/stampede.py`)",
        "",
        (
            f"P processes, one expired access token, one `acquire_token_silent` each; the "
            f"token endpoint answers after {latency * 1000:.0f} ms. Median of {repetitions} "
            "run(s); wall time from the barrier's release to the last token. One-minute load "
            f"average at the end of the runs: {min(loads):.1f} to {max(loads):.1f}."
        ),
        "",
        "| contender | P | token requests (min-max) | from cache | wall time | failures |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        low, high = row["hits_range"]
        lines.append(
            f"| {row['contender']} | {row['processes']} | {row['hits']:g} ({low}-{high}) | "
            f"{row['cache']:g} | {row['wall'] * 1000:.0f} ms | {row['failures']} |"
        )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, cache_path, barrier, parties, latency = sys.argv[2:7]
        worker(kind, cache_path, barrier, int(parties), float(latency))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="one run per row instead of three")
    parser.add_argument("--latency", type=float, default=0.1, help="token endpoint delay (s)")
    parser.add_argument("--tmpdir", help="where the temporary cache directories go")
    args = parser.parse_args()
    repetitions = 1 if args.quick else 3
    from redis_bench import Server  # noqa: PLC0415 - beside this script; needs the redis extra

    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="msal-persist-stampede-") as root:
        hit = hit_cost(5 if args.quick else 15, root)
        server = Server(Path(root))
        try:
            rows = measure(repetitions, args.latency, root, server)
        finally:
            server.stop()
    print(table(rows, repetitions, args.latency, hit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
