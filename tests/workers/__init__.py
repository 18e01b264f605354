"""Worker processes the tests start: ``python -m workers.<module> COMMAND ARGS...``.

The parent builds the command with ``process_helpers.worker`` and starts and reaps it with
``process_helpers`` alone; ``process_helpers.worker_env`` puts this checkout's
``msal_persist`` and ``tests/`` on the workers' ``PYTHONPATH``. One module per job:

- :mod:`workers.cache`: real msal applications on a ``PersistedTokenCache``.
- :mod:`workers.lock`: holders of the lock file, msal-persist's and other tools' ways.
- :mod:`workers.interop`: msal-persist and msal-extensions peers (``tests_interop/``).

This package itself imports only the standard library: the msal-extensions peers must choose
their lock flavour before anything imports portalocker, and never import ``msal_persist``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping

BARRIER_TIMEOUT = 30.0


def wait_for_barrier(path: str | os.PathLike[str], parties: int | str) -> None:
    """Announce arrival in the file ``path`` and return once ``parties`` processes arrived."""
    with open(path, "a") as arrivals:
        arrivals.write(".")
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while os.stat(path).st_size < int(parties):
        if time.monotonic() > deadline:
            msg = "barrier timed out"
            raise TimeoutError(msg)
        time.sleep(0.001)


def main(commands: Mapping[str, Callable[..., object]]) -> None:
    """Run the command named by ``sys.argv[1]`` with the rest of ``sys.argv`` as arguments."""
    commands[sys.argv[1]](*sys.argv[2:])
