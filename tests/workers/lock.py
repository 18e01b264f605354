"""Lock workers: ``python -m workers.lock COMMAND ARGS...``.

Holders print ``ready`` once they hold the lock and keep it until their stdin closes (or they
are killed). Besides msal-persist's own lock, two holders imitate the peer families that
share the lock file: one creates it exclusively, one takes an OS lock on it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import portalocker

from msal_persist import CrossProcessLock
from workers import main, wait_for_barrier


def hold(lock_path: str) -> None:
    """Hold msal-persist's lock on ``lock_path`` until stdin closes."""
    lock = CrossProcessLock(lock_path)
    lock.acquire()
    print("ready", flush=True)
    sys.stdin.read()  # hold until the parent closes stdin or kills us
    lock.release()


def hold_like_exclusive_create_peer(lock_path: str) -> None:
    """Hold ``lock_path`` as msal-extensions 1.3 without portalocker (and msal-node) do.

    They create the file exclusively, record "<pid> <argv0>", take no OS lock, and delete
    the file on release.
    """
    fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"{os.getpid()} {sys.argv[0]}".encode())
    os.close(fd)
    print("ready", flush=True)
    sys.stdin.read()
    os.remove(lock_path)


def hold_like_os_lock_peer(lock_path: str) -> None:
    """Hold ``lock_path`` as MSAL.NET, MSAL Go and msal-extensions with portalocker do.

    They take an OS lock on the file and delete it on release.
    """
    with open(lock_path, "a+b") as handle:
        portalocker.lock(handle, portalocker.LockFlags.EXCLUSIVE)
        handle.write(f"{os.getpid()} {sys.argv[0]}".encode())
        handle.flush()
        print("ready", flush=True)
        sys.stdin.read()
        os.remove(lock_path)
        portalocker.unlock(handle)


def count_under_lock(lock_path: str, counter: str, rounds: str, parties: str) -> None:
    """After the barrier, add one to the number in ``counter`` ``rounds`` times, locked."""
    lock = CrossProcessLock(lock_path)
    wait_for_barrier(lock_path + ".barrier", parties)
    count = Path(counter)
    for _ in range(int(rounds)):
        with lock:
            value = int(count.read_text())
            time.sleep(0.0005)  # widen the window a broken lock would lose updates in
            count.write_text(str(value + 1))


def take_turns(lock_path: str, log: str, rounds: str, parties: str) -> None:
    """After the barrier, lock ``rounds`` times back to back, logging our pid each time."""
    lock = CrossProcessLock(lock_path)
    wait_for_barrier(lock_path + ".barrier", parties)
    pid = os.getpid()
    for _ in range(int(rounds)):
        with lock:  # back to back: a greedy holder would lock again before anyone else
            with open(log, "a") as out:
                out.write(f"{pid}\n")
            time.sleep(0.001)


def exit_at_once() -> None:
    """Do nothing: the pid of this finished process names no running process."""


def sleep(seconds: str) -> None:
    """Stay alive (a live pid that holds no lock) until killed or ``seconds`` pass."""
    time.sleep(float(seconds))


COMMANDS = {
    "sleep": sleep,
    "hold": hold,
    "hold_like_exclusive_create_peer": hold_like_exclusive_create_peer,
    "hold_like_os_lock_peer": hold_like_os_lock_peer,
    "count_under_lock": count_under_lock,
    "take_turns": take_turns,
    "exit_at_once": exit_at_once,
}

if __name__ == "__main__":
    main(COMMANDS)
