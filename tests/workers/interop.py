"""Interop peers: ``python -m workers.interop ROLE JSON-ARGS`` (see ``tests_interop/``).

Each process is one application on the shared cache file: either msal-persist
(``kind="persist"``) or msal-extensions 1.3 in one of its two lock flavours:

- ``"ext-filelock"``: its default, ``msal_extensions.filelock.CrossPlatLock`` (exclusive
  creation of the lock file, ``LockError`` after 5 s). msal-extensions picks it when
  portalocker does not import; portalocker is installed here (msal-persist needs it), so this
  process blocks the import before msal_extensions is imported.
- ``"ext-portalocker"``: ``msal_extensions.cache_lock.CrossPlatLock`` (exclusive creation
  tried for 5 s, then a portalocker lock regardless).

Every process checks which ``CrossPlatLock`` msal_extensions actually chose and refuses to run
with the wrong one. The msal-extensions processes never import the ``msal_persist`` package:
the local authority is loaded from ``msal_persist/testing.py`` on its own (it needs only msal),
so a peer process is exactly what an msal-extensions application would be.

Every role prints one JSON object on its last stdout line (``"ready"`` lines come first for
roles that hold something). Nothing here is a mock: real msal applications, real files.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from workers import main, wait_for_barrier

KINDS = ("persist", "ext-filelock", "ext-portalocker")
EXPECTED_LOCK_MODULE = {
    "ext-filelock": "msal_extensions.filelock",
    "ext-portalocker": "msal_extensions.cache_lock",
}
ACCOUNT_LOOKUP_TIMEOUT = 10.0


class LockMessages(logging.Handler):
    """Counts msal-extensions' own lock complaints (its portalocker flavour only logs them)."""

    def __init__(self) -> None:
        """Count nothing yet."""
        super().__init__(logging.WARNING)
        self.failed_to_create = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count "failed to create lock file": the 5 s exclusive-create timeout ran out."""
        if "failed to create lock file" in record.getMessage():
            self.failed_to_create += 1


class Peer:
    """One application's cache and lock, as the kind of peer chosen."""

    def __init__(self, kind: str) -> None:
        """Import the right library, in the right flavour."""
        if kind not in KINDS:
            raise SystemExit(f"unknown peer kind {kind!r}")
        self.kind = kind
        self.lock_module = "msal_persist._lock"
        self.messages = LockMessages()
        if kind == "persist":
            import msal_persist  # noqa: PLC0415 - only the msal-persist peer may import it
            import msal_persist.testing  # noqa: PLC0415

            self.testing: ModuleType = msal_persist.testing
            self.lock_errors: tuple[type[BaseException], ...] = (msal_persist.LockTimeoutError,)
            self._persist = msal_persist
            return
        if kind == "ext-filelock":
            # msal_extensions.token_cache falls back to its file lock when importing
            # portalocker raises ImportError, which a None entry in sys.modules makes it do.
            sys.modules["portalocker"] = None  # type: ignore[assignment]
        import msal_extensions  # noqa: PLC0415 - imported after the flavour is chosen
        from msal_extensions import token_cache  # noqa: PLC0415

        self.lock_module = token_cache.CrossPlatLock.__module__
        if self.lock_module != EXPECTED_LOCK_MODULE[kind]:
            raise SystemExit(
                f"{kind}: msal_extensions chose {self.lock_module}, "
                f"not {EXPECTED_LOCK_MODULE[kind]}"
            )
        logging.getLogger("msal_extensions").addHandler(self.messages)
        self.testing = _load_testing_module()
        self.lock_errors = (msal_extensions.LockError,)
        self._ext = msal_extensions
        self._ext_lock_class = token_cache.CrossPlatLock

    def token_cache(self, path: str) -> Any:
        """A persistent token cache on ``path``, as this kind of application makes one."""
        if self.kind == "persist":
            return self._persist.PersistedTokenCache(path)
        return self._ext.PersistedTokenCache(self._ext.FilePersistence(path))

    def lock(self, lockpath: str) -> Any:
        """The cross-process lock this kind of application takes, as a context manager."""
        if self.kind == "persist":
            return self._persist.CrossProcessLock(lockpath)
        return self._ext_lock_class(lockpath)

    def report(self) -> dict[str, Any]:
        """What every role reports about the peer itself."""
        return {
            "kind": self.kind,
            "pid": os.getpid(),
            "lock_module": self.lock_module,
            "lock_fallbacks": self.messages.failed_to_create,
        }


def _load_testing_module() -> ModuleType:
    """Load msal_persist/testing.py without the msal_persist package (which needs portalocker)."""
    name = "msal_persist_testing_standalone"
    package = importlib.util.find_spec("msal_persist")  # finds it without importing it
    if package is None or package.origin is None:
        raise SystemExit("cannot find msal_persist")
    testing = Path(package.origin).with_name("testing.py")
    spec = importlib.util.spec_from_file_location(name, testing)
    if spec is None or spec.loader is None:
        raise SystemExit("cannot load msal_persist/testing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def find_account(app: Any, home_account_id: str) -> tuple[dict[str, Any], int]:
    """Return the account and how many ``get_accounts()`` calls missed it first."""
    misses = 0
    deadline = time.monotonic() + ACCOUNT_LOOKUP_TIMEOUT
    while True:
        for account in app.get_accounts():
            if account["home_account_id"] == home_account_id:
                return account, misses
        misses += 1
        if time.monotonic() > deadline:
            raise SystemExit(f"account not found after {misses} get_accounts() calls")
        time.sleep(0.01)


def refresh(args: dict[str, Any]) -> dict[str, Any]:
    """Sign one user in, wait at the barrier, then force refreshes; report RTs and stalls.

    Args (JSON): kind, cache, user, barrier, parties; refreshes (count) and/or duration
    (seconds, whichever ends first); pause (seconds between refreshes, default none);
    sign_in (default true).
    """
    peer = Peer(args["kind"])
    authority = peer.testing.LocalAuthority(username=args["user"])
    app = authority.public_client(token_cache=peer.token_cache(args["cache"]))
    home_account_id = authority.home_account_id(args["user"])
    rts: list[str] = []
    stalls: list[float] = []
    lock_errors: list[str] = []
    silent_failures = 0
    sign_in_time = 0.0
    if args.get("sign_in", True):
        started = time.monotonic()
        rts.append(authority.sign_in(app, username=args["user"])["refresh_token"])
        sign_in_time = time.monotonic() - started
    account, account_misses = find_account(app, home_account_id)
    wait_for_barrier(args["barrier"], args["parties"])
    refreshes = args.get("refreshes")
    end = time.monotonic() + args["duration"] if args.get("duration") else None
    calls = 0
    while (refreshes is None or calls < refreshes) and (end is None or time.monotonic() < end):
        if calls and args.get("pause"):
            time.sleep(args["pause"])
        calls += 1
        started = time.monotonic()
        try:
            result = app.acquire_token_silent(
                peer.testing.DEFAULT_SCOPES, account, force_refresh=True
            )
        except peer.lock_errors as error:
            lock_errors.append(f"{type(error).__name__}: {error}")
            result = None
        stalls.append(time.monotonic() - started)
        if result is None or "refresh_token" not in result:
            # msal-extensions sometimes reads the file mid-write (truncated) and finds no
            # refresh token for this account: msal then answers None.
            silent_failures += 1
            continue
        rts.append(result["refresh_token"])
    return {
        **peer.report(),
        "user": args["user"],
        "home_account_id": home_account_id,
        "rts": rts,
        "last_rt": rts[-1] if rts else None,
        "calls": calls,
        "max_stall": max(stalls, default=0.0),
        "sign_in_time": sign_in_time,
        "lock_errors": lock_errors,
        "silent_failures": silent_failures,
        "account_misses": account_misses,
    }


def read_loop(args: dict[str, Any]) -> dict[str, Any]:
    """Read accounts and cached tokens in a loop; count what was missing; write now and then.

    Args (JSON): kind, cache, user (already signed in), barrier, parties, duration;
    refresh_every (force a refresh, which writes, every N iterations; 0 never).
    """
    peer = Peer(args["kind"])
    authority = peer.testing.LocalAuthority(username=args["user"])
    app = authority.public_client(token_cache=peer.token_cache(args["cache"]))
    account, _ = find_account(app, authority.home_account_id(args["user"]))
    wait_for_barrier(args["barrier"], args["parties"])
    counts: dict[int, int] = {}
    silent_failures = 0
    writes = 0
    lock_errors: list[str] = []
    iterations = 0
    end = time.monotonic() + args["duration"]
    while time.monotonic() < end:
        iterations += 1
        n = len(app.get_accounts())
        counts[n] = counts.get(n, 0) + 1
        force = bool(args.get("refresh_every")) and iterations % args["refresh_every"] == 0
        try:
            result = app.acquire_token_silent(
                peer.testing.DEFAULT_SCOPES, account, force_refresh=force
            )
        except peer.lock_errors as error:
            lock_errors.append(f"{type(error).__name__}: {error}")
            continue
        writes += force
        if result is None or "access_token" not in result:
            silent_failures += 1
    return {
        **peer.report(),
        "iterations": iterations,
        "account_counts": {str(k): v for k, v in sorted(counts.items())},
        "min_accounts": min(counts, default=0),
        "silent_failures": silent_failures,
        "writes": writes,
        "lock_errors": lock_errors,
    }


def hold_lock(args: dict[str, Any]) -> dict[str, Any]:
    """Take the lock, print "ready", hold it until stdin closes (or SIGKILL ends us).

    Args (JSON): kind, lockpath.
    """
    peer = Peer(args["kind"])
    lock = peer.lock(args["lockpath"])
    lock.__enter__()
    print("ready", flush=True)
    sys.stdin.read()
    lock.__exit__(None, None, None)
    return peer.report()


def lock_once(args: dict[str, Any]) -> dict[str, Any]:
    """Take the lock once and release it; report how long taking it took, and any error.

    Args (JSON): kind, lockpath.
    """
    peer = Peer(args["kind"])
    lock = peer.lock(args["lockpath"])
    error = None
    started = time.monotonic()
    try:
        with lock:
            acquired = time.monotonic() - started
    except peer.lock_errors as caught:
        acquired = None
        error = f"{type(caught).__name__}: {caught}"
    return {
        **peer.report(),
        "acquired_after": acquired,
        "elapsed": time.monotonic() - started,
        "error": error,
        "lockfile_left": os.path.exists(args["lockpath"]),
    }


def write_in_place(args: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the cache in place without any lock, the way msal's own docstring recipe does.

    The write is split in two with a pause between, which widens the window in which the file
    is torn (truncated and partly written), as a slow disk or a large cache would.

    Args (JSON): cache, source (a file holding the document to write), pause (seconds).
    """
    data = Path(args["source"]).read_bytes()
    half = len(data) // 2
    with open(args["cache"], "wb") as handle:  # O_TRUNC, as open(path, "w") does
        handle.write(data[:half])
        handle.flush()
        print("ready", flush=True)
        time.sleep(args["pause"])
        handle.write(data[half:])
    return {"pid": os.getpid(), "bytes": len(data)}


def reporting(role: Callable[[dict[str, Any]], dict[str, Any]]) -> Callable[[str], None]:
    """The command running ``role`` on its JSON arguments and printing its JSON report."""

    def command(raw: str) -> None:
        print(json.dumps(role(json.loads(raw))), flush=True)

    return command


ROLES = {
    "refresh": refresh,
    "read_loop": read_loop,
    "hold_lock": hold_lock,
    "lock_once": lock_once,
    "write_in_place": write_in_place,
}

if __name__ == "__main__":
    main({name: reporting(role) for name, role in ROLES.items()})
