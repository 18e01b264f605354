"""Run real worker processes for the multi-process tests, bounded in count and time."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msal_persist

# Workers import the same msal_persist the tests do (installed or from src/), plus the
# helpers in tests/.
SEARCH_PATH = [str(Path(msal_persist.__file__).resolve().parents[1]), str(Path(__file__).parent)]
WORKER_TIMEOUT = 90.0
READY_TIMEOUT = 20.0


HOLD_LOCK = """
    import sys
    from msal_persist import CrossProcessLock
    lock = CrossProcessLock(sys.argv[1])
    lock.acquire()
    print("ready", flush=True)
    sys.stdin.read()  # hold until the parent closes stdin or kills us
    lock.release()
"""
"""A worker (see python_command) that holds the lock file argv[1] until stdin closes."""


def cache_worker(command: str, *args: str) -> list[str]:
    """Build a command running one of ``cache_workers.py``'s commands in a fresh interpreter."""
    return [sys.executable, str(Path(__file__).with_name("cache_workers.py")), command, *args]


def python_command(code: str, *args: str) -> list[str]:
    """Build a command that runs ``code`` in a fresh interpreter with ``args`` as argv[1:]."""
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def worker_env() -> dict[str, str]:
    """The environment for workers: this checkout's package importable even if not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*SEARCH_PATH, env.get("PYTHONPATH")]))
    return env


def start(command: list[str], *, stdin: bool = False, stderr: bool = True) -> subprocess.Popen[str]:
    """Start one worker with piped stdout (and stdin, stderr as asked) and the worker env."""
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr else subprocess.DEVNULL,
        env=worker_env(),
        text=True,
    )


def run_workers(commands: Sequence[list[str]], timeout: float = WORKER_TIMEOUT) -> list[str]:
    """Start every command at once, wait for all, return their stdouts; fail on any error."""
    procs = [start(cmd) for cmd in commands]
    deadline = time.monotonic() + timeout
    outputs = []
    failures = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            outputs.append(out)
            if proc.returncode != 0:
                failures.append(f"pid {proc.pid} exited {proc.returncode}:\n{err[-3000:]}")
    finally:
        for proc in procs:
            stop(proc)
    assert not failures, "\n".join(failures)
    return outputs


@contextmanager
def running(command: list[str], ready_line: str = "ready") -> Iterator[subprocess.Popen[str]]:
    """Start a worker, wait until it prints ``ready_line``, and kill and reap it at the end."""
    proc = start(command, stdin=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != ready_line:
            stop(proc)
            err = proc.stderr.read() if proc.stderr else ""
            msg = f"worker did not get ready: {line!r}\n{err[-3000:]}"
            raise AssertionError(msg)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


def wait_for_barrier(path: Path, parties: int, timeout: float = 30.0) -> None:
    """Used inside workers: announce arrival in ``path`` and wait until all have arrived."""
    with path.open("a") as arrivals:
        arrivals.write(".")
    deadline = time.monotonic() + timeout
    while path.stat().st_size < parties:
        if time.monotonic() > deadline:
            msg = "barrier timed out"
            raise TimeoutError(msg)
        time.sleep(0.002)
