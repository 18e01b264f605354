"""``demo``: several real processes share one cache; the first signs in, the others need not.

Against the local stand-in authority of :mod:`msal_persist.testing`: no network, no real
account. Each process is a fresh interpreter running :func:`demo_worker`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from msal_persist._file_store import FileStore
from msal_persist._locations import DEFAULT_APP_NAME
from msal_persist._token_cache import PersistedTokenCache

from ._base import AddCommand, ExitCode, resolve, say, seconds

__all__ = ["add_commands", "demo_worker"]

_DEMO_TIMEOUT: Final = 60.0
_DEMO_MAX_PROCESSES: Final = 64
_WORKER_CODE: Final = (
    "import sys\n"
    "from msal_persist._cli._demo import demo_worker\n"
    "sys.exit(demo_worker(sys.argv[1:]))\n"
)
_SIGN_IN: Final = "sign-in"
_SILENT: Final = "silent"


def add_commands(add: AddCommand) -> None:
    """Add ``demo``."""
    demo = add(
        "demo",
        summary="watch processes share one cache: one signs in, the others need not",
        description=(
            "Start N Python processes on one shared cache against a local stand-in authority "
            "(no network). The first signs in; the others start after it and get their "
            "token silently from the cache."
        ),
        handler=_cmd_demo,
    )
    demo.add_argument(
        "-n", "--processes", type=_process_count, default=4, metavar="N", help="default: 4"
    )
    demo.add_argument(
        "--cache",
        metavar="PATH",
        help="keep the shared cache in PATH (default: a temporary directory, removed after)",
    )
    demo.add_argument(
        "--token-lifetime",
        type=seconds(minimum=1),
        default=3600,
        metavar="SECONDS",
        help="access token lifetime; below 300 every later process refreshes (default: 3600)",
    )


def _process_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 2 <= count <= _DEMO_MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"choose between 2 and {_DEMO_MAX_PROCESSES}")
    return count


@dataclass(frozen=True)
class _WorkerReport:
    """What one demo process did, as it reported it on its stdout."""

    pid: int
    source: str
    ms: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)
    contended: int = 0
    waited: float = 0.0
    error: str | None = None

    @classmethod
    def from_output(cls, pid: int, returncode: int, stdout: str, stderr: str) -> _WorkerReport:
        lines = stdout.strip().splitlines()
        try:
            data = json.loads(lines[-1])
            report = cls(
                pid=int(data["pid"]),
                source=str(data["source"]),
                ms=float(data["ms"]),
                hits={str(k): int(v) for k, v in data["hits"].items()},
                contended=int(data["contended"]),
                waited=float(data["waited"]),
                error=None if data["error"] is None else str(data["error"]),
            )
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            last = stderr.strip().splitlines()[-1:] or [f"exited with status {returncode}"]
            return cls(pid, "failed", error=last[0])
        if returncode != 0 and report.error is None:
            return cls(pid, "failed", error=f"exited with status {returncode}")
        return report


def demo_worker(argv: Sequence[str]) -> int:
    """Body of one demo process: get a token through a shared cache, report as JSON.

    ``argv`` is ``[cache path, "sign-in" | "silent", access token lifetime]``.
    """
    from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority  # noqa: PLC0415 - only demo needs it

    path, role, lifetime = argv
    report: dict[str, Any] = {"pid": os.getpid(), "source": "failed", "ms": 0.0, "error": None}
    authority = LocalAuthority(access_token_lifetime=int(float(lifetime)))
    store = FileStore(path, lock_timeout=_DEMO_TIMEOUT)
    cache = PersistedTokenCache(store=store)
    try:
        app = authority.public_client(token_cache=cache)
        started = time.perf_counter()
        if role == _SIGN_IN:
            flow = app.initiate_device_flow(DEFAULT_SCOPES)
            result = app.acquire_token_by_device_flow(flow)
        else:
            accounts = app.get_accounts()
            result = app.acquire_token_silent(DEFAULT_SCOPES, accounts[0]) if accounts else None
        report["ms"] = (time.perf_counter() - started) * 1000
        report["source"], report["error"] = _token_source(role, result, authority.hits_by_grant)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the demo
        report["error"] = f"{type(error).__name__}: {error}"
    report.update(
        hits=authority.hits_by_grant,
        contended=store.lock.contended,
        waited=store.lock.waited,
    )
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if report["error"] is None else 1


def _token_source(
    role: str, result: Mapping[str, Any] | None, hits: Mapping[str, int]
) -> tuple[str, str | None]:
    if result is None:
        return "failed", "no account in the shared cache: single sign-on did not happen"
    if "access_token" not in result:
        return "failed", f"{result.get('error')}: {result.get('error_description')}"
    if role == _SIGN_IN:
        return "signed in", None
    if result.get("token_source") == "cache":
        return "cache", None
    if set(hits) == {"refresh_token"}:
        return "refreshed", None
    return "failed", f"token came from {sorted(hits)}, not from the cache"


def _cmd_demo(args: argparse.Namespace) -> int:
    temp_dir = None
    if args.cache is None:
        temp_dir = tempfile.mkdtemp(prefix="msal-persist-demo-")
        path = Path(temp_dir, "token_cache.json")
    else:
        path = resolve(args.cache, DEFAULT_APP_NAME).path
    started = time.perf_counter()
    try:
        say(f"demo: {args.processes} processes share {path}")
        reports = _run_demo(path, args.processes, args.token_lifetime)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    elapsed = (time.perf_counter() - started) * 1000
    for report in reports:
        detail = f"  {report.error}" if report.error else ""
        say(f"pid {report.pid:<7} {report.source:<9} {report.ms:7.1f} ms{detail}")
    later = reports[1:]
    silent = [r for r in later if r.source in {"cache", "refreshed"}]
    sso = reports[0].source == "signed in" and len(silent) == len(later)
    grants: dict[str, int] = {}
    for report in reports:
        for grant, count in report.hits.items():
            grants[_grant_name(grant)] = grants.get(_grant_name(grant), 0) + count
    verdict = "yes" if sso else "NO"
    kept = "kept" if temp_dir is None else "removed with its temporary directory"
    say(
        f"single sign-on: {verdict}: {sum(r.source == 'signed in' for r in reports)} sign-in, "
        f"{len(silent)} of {len(later)} later processes got a token without signing in",
        f"token endpoint hits: {sum(grants.values())}"
        + (
            " (" + ", ".join(f"{g}: {n}" for g, n in sorted(grants.items())) + ")" if grants else ""
        ),
        f"cache hits: {sum(r.source == 'cache' for r in reports)}, "
        f"refreshes: {sum(r.source == 'refreshed' for r in reports)}",
        f"lock waits: {sum(r.contended for r in reports)} "
        f"({sum(r.waited for r in reports) * 1000:.1f} ms in total)",
        f"cache file: {path} ({kept})",
        f"total time: {elapsed:.0f} ms",
    )
    return ExitCode.OK if sso else ExitCode.FAILED


def _grant_name(grant: str) -> str:
    return "device code" if grant.endswith(":device_code") else grant.replace("_", " ")


def _run_demo(path: Path, processes: int, lifetime: float) -> list[_WorkerReport]:
    deadline = time.monotonic() + _DEMO_TIMEOUT
    first = _run_workers(path, [_SIGN_IN], lifetime, deadline)
    if first[0].source != "signed in":
        return first
    # The others start together, after the sign-in: they share what it left in the file.
    return first + _run_workers(path, [_SILENT] * (processes - 1), lifetime, deadline)


def _run_workers(
    path: Path, roles: Sequence[str], lifetime: float, deadline: float
) -> list[_WorkerReport]:
    env = dict(os.environ)
    # The children must import this very copy of the package, installed or not.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter running our own code
            [sys.executable, "-c", _WORKER_CODE, str(path), role, str(lifetime)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for role in roles
    ]
    reports = []
    try:
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                reports.append(_WorkerReport(proc.pid, "failed", error="timed out"))
                continue
            reports.append(_WorkerReport.from_output(proc.pid, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return reports
