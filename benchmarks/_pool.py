"""A pool of ``_worker.py`` subprocesses and the barrier that releases them together."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve().parent / "_worker.py"


class _Worker:
    def __init__(self, index: int, directory: Path) -> None:
        self.index = index
        self.stderr_path = directory / f"worker-{index}.stderr"
        self.stderr_offset = 0
        self.buffer = b""
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                bufsize=0,
            )
        self.broken = False

    def pop_line(self) -> str | None:
        line, sep, rest = self.buffer.partition(b"\n")
        if not sep:
            return None
        self.buffer = rest
        return line.decode(errors="replace")

    def send(self, text: str) -> bool:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(text.encode())
        except (BrokenPipeError, OSError):
            self.broken = True
            return False
        return True

    def new_stderr(self) -> str:
        try:
            with open(self.stderr_path, "rb") as stderr:
                stderr.seek(self.stderr_offset)
                data = stderr.read()
        except OSError:
            return ""
        self.stderr_offset += len(data)
        return data.decode(errors="replace")

    def stop(self, timeout: float) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Outcome:
    """What one worker brought back from one round."""

    report: dict[str, Any] | None
    failure: str | None
    stderr: str


class WorkerPool:
    """Up to ``size`` long-lived workers; a round uses the first P of them.

    Every process is ended by its own handle on close (stdin closed, then ``kill`` past a
    timeout); a worker that died or overran a round is killed and replaced before the next.
    """

    def __init__(self, size: int, directory: Path, startup_timeout: float = 120.0) -> None:
        self.size = size
        self.directory = directory
        self.startup_timeout = startup_timeout
        self.workers: list[_Worker | None] = [None] * size

    def __enter__(self) -> WorkerPool:
        self._ensure(self.size)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for worker in self.workers:
            if worker is not None:
                worker.stop(timeout=10.0)
        self.workers = [None] * self.size

    def _ensure(self, count: int) -> list[_Worker]:
        """The first ``count`` workers, started (and past their imports) if need be."""
        fresh: list[_Worker] = []
        for index in range(count):
            worker = self.workers[index]
            if worker is not None and (worker.broken or worker.proc.poll() is not None):
                worker.proc.kill()
                worker.stop(timeout=5.0)
                worker = None
            if worker is None:
                worker = _Worker(index, self.directory)
                self.workers[index] = worker
                fresh.append(worker)
        if fresh:
            lines = _next_lines(fresh, time.monotonic() + self.startup_timeout)
            for worker in fresh:
                if lines.get(worker) != "HELLO":
                    raise RuntimeError(
                        f"worker {worker.index} did not start: {worker.new_stderr()[-500:]}"
                    )
        return [w for w in self.workers[:count] if w is not None]

    def round(self, commands: list[dict[str, Any]], timeout: float) -> list[Outcome]:
        """Run one command per worker, releasing all of them at once after they are READY."""
        workers = self._ensure(len(commands))
        deadline = time.monotonic() + timeout
        for worker, command in zip(workers, commands, strict=True):
            worker.send(json.dumps(command) + "\n")
        ready_lines = _next_lines(workers, deadline)
        ready = [w for w in workers if ready_lines.get(w) == "READY"]
        for worker in ready:  # the barrier: every READY worker gets GO now
            worker.send("GO\n")
        reports = _next_lines(ready, deadline)
        outcomes = []
        for worker in workers:
            failure = None
            report = None
            if worker not in ready:
                failure = f"worker {worker.index + 1} never became ready"
            else:
                line = reports.get(worker)
                if line is None:
                    failure = f"worker {worker.index + 1} died or overran the round"
                else:
                    try:
                        report = json.loads(line)
                    except ValueError:
                        failure = f"worker {worker.index + 1} printed {line[:100]!r}"
            if failure is not None:
                worker.broken = True
                if worker.proc.poll() is None:
                    worker.proc.kill()
                worker.proc.wait()
                tail = worker.new_stderr().strip().splitlines()[-1:]
                outcomes.append(Outcome(None, f"{failure}: {' '.join(tail)}"[:240], ""))
            else:
                outcomes.append(Outcome(report, None, worker.new_stderr()))
        return outcomes


def _next_lines(workers: list[_Worker], deadline: float) -> dict[_Worker, str | None]:
    """Each worker's next stdout line; None for a worker that ended or missed the deadline."""
    result: dict[_Worker, str | None] = {}
    with selectors.DefaultSelector() as selector:
        for worker in workers:
            line = worker.pop_line()
            if line is not None:
                result[worker] = line
            elif worker.broken or worker.proc.stdout is None:
                result[worker] = None
            else:
                selector.register(worker.proc.stdout, selectors.EVENT_READ, worker)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(timeout=remaining):
                worker = key.data
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    result[worker] = None
                    selector.unregister(key.fileobj)
                    continue
                worker.buffer += chunk
                line = worker.pop_line()
                if line is not None:
                    result[worker] = line
                    selector.unregister(key.fileobj)
    for worker in workers:
        result.setdefault(worker, None)
    return result
