"""A real ``redis-server`` for the tests: started on 127.0.0.1, a free port, a temp dir.

Never a fake: every claim about concurrency, coherence or faults in ``tests_redis/`` is
made against this server. When ``redis-server`` is not installed the tests fail (never
skip) and say the exact command that installs it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

INSTALL = "sudo apt-get update && sudo apt-get install -y redis-server"
START_TIMEOUT = 10.0


def redis_server_program() -> str:
    """The path of ``redis-server``; fail the test with the install command if missing."""
    program = shutil.which("redis-server")
    if program is None:
        pytest.fail(f"redis-server is not installed; these tests need the real server: {INSTALL}")
    return program


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process this test session owns: start, pause, kill, restart."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.durable = durable
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        """A plain client for the test's own look at the server (never the store's)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> None:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"]
            if self.durable
            else ["--appendonly", "no"]
        )
        command = [
            redis_server_program(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            *persistence,
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT
        client = self.admin()
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = self.directory / "redis.log"
                    text = log.read_text()[-2000:] if log.exists() else ""
                    self.stop()
                    pytest.fail(f"redis-server did not start on port {self.port}:\n{text}")
                time.sleep(0.02)
        client.close()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the server and reap it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server (even a paused one) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``condition`` (a bounded wait for the background channel, never a timing claim)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)


def command_calls(client: redis.Redis) -> dict[str, int]:
    """How many times the server ran each command, from ``INFO commandstats``."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
