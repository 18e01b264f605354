"""Start, watch and reap worker processes (``tests/workers/``), bounded in count and time.

Both suites start every worker through here: ``worker`` builds the command, ``start`` or
``running`` or ``run_all`` / ``run_workers`` start it, and every path out ``stop``s (kills
and reaps) whatever still runs.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import msal_persist

# Workers import the same msal_persist the tests do (installed or from src/), plus the
# workers package and helpers in tests/.
SEARCH_PATH = [str(Path(msal_persist.__file__).resolve().parents[1]), str(Path(__file__).parent)]
WORKER_TIMEOUT = 90.0
READY_TIMEOUT = 20.0


def worker(module: str, command: str, *args: str) -> list[str]:
    """The command line running ``command`` of ``workers.<module>`` in a fresh interpreter."""
    return [sys.executable, "-m", f"workers.{module}", command, *args]


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


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it still runs, reap it and close its pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None and not stream.closed:
            stream.close()


@dataclasses.dataclass
class Outcome:
    """How one worker ended: its command, pid, exit code, stdout and stderr."""

    command: list[str]
    pid: int
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """Whether the worker exited 0."""
        return self.returncode == 0

    def describe(self) -> str:
        """A failure message naming the worker and showing the end of its stderr."""
        what = " ".join(self.command[2:5])[:200]
        return f"{what} (pid {self.pid}) exited {self.returncode}:\n{self.stderr[-3000:]}"


def run_all(commands: Sequence[list[str]], timeout: float = WORKER_TIMEOUT) -> list[Outcome]:
    """Start every command at once and wait for all; kill and reap any left at the deadline."""
    procs = [start(cmd) for cmd in commands]
    deadline = time.monotonic() + timeout
    outcomes = []
    try:
        for cmd, proc in zip(commands, procs, strict=True):
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(proc)
                out, err = "", f"killed: the {timeout} s deadline for all workers passed"
            outcomes.append(Outcome(cmd, proc.pid, proc.returncode, out, err))
    finally:
        for proc in procs:
            stop(proc)
    return outcomes


def run_workers(commands: Sequence[list[str]], timeout: float = WORKER_TIMEOUT) -> list[str]:
    """Start every command at once, wait for all, return their stdouts; fail on any error."""
    outcomes = run_all(commands, timeout)
    failures = [outcome.describe() for outcome in outcomes if not outcome.ok]
    assert not failures, "\n".join(failures)
    return [outcome.stdout for outcome in outcomes]


@contextmanager
def running(command: list[str], ready_line: str = "ready") -> Iterator[subprocess.Popen[str]]:
    """Start a worker, wait until it prints ``ready_line``, and kill and reap it at the end."""
    proc = start(command, stdin=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != ready_line:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            msg = f"worker did not get ready: {line!r}\n{err[-3000:]}"
            raise AssertionError(msg)
        yield proc
    finally:
        stop(proc)


def finished_worker() -> subprocess.Popen[str]:
    """A worker that has exited and been reaped: no process runs under its pid."""
    proc = start(worker("lock", "exit_at_once"))
    try:
        proc.communicate(timeout=30)
    finally:
        stop(proc)
    assert proc.returncode == 0
    return proc
