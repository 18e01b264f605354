"""Ctrl-C at any instant of taking, writing or giving up the lock leaves nothing held.

A real SIGINT is raised before each bytecode executed in msal-persist's own frames (and
portalocker's), one instant per run; Python then runs the real handler at its next check,
exactly as when a user presses Ctrl-C. After every run the lock must be free for this
instance, another instance and another thread, no lock or temp file may be left, and the
file must hold a whole document that the next write builds on.
"""

from __future__ import annotations

import dis
import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import portalocker
import pytest

import msal_persist
from msal_persist import CrossProcessLock, PersistedTokenCache

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="SIGINT needs main"
)

_TRACED = tuple(
    str(Path(module.__file__).parent) for module in (msal_persist, portalocker) if module.__file__
)


def _check_points(code: CodeType) -> frozenset[int]:
    """Offsets where CPython looks for pending signals.

    Function entry, loop back-edges, and right after a call returns: a Ctrl-C takes effect
    at one of these, never elsewhere.
    """
    points = set()
    previous = ""
    for instruction in dis.get_instructions(code):
        if (
            instruction.offset == 0
            or instruction.opname in {"RESUME", "JUMP_BACKWARD"}
            or previous.startswith("CALL")
        ):
            points.add(instruction.offset)
        if instruction.opname != "CACHE":
            previous = instruction.opname
    return frozenset(points)


class _InterruptAt:
    """Counts check points run in the traced packages; raises a real SIGINT at the n-th."""

    def __init__(self, target: int | None, spare: frozenset[str]) -> None:
        self.target = target
        self.spare = spare
        self.count = 0
        self.points: dict[CodeType, frozenset[int]] = {}

    def step(self, code: CodeType, offset: int) -> None:
        points = self.points.get(code)
        if points is None:
            points = self.points[code] = _check_points(code)
        if offset not in points or code.co_name in self.spare:
            return
        self.count += 1
        if self.count - 1 == self.target:  # counted first: the handler may raise right here
            signal.raise_signal(signal.SIGINT)

    # Python 3.10 and 3.11: sys.settrace with opcode events.
    def trace(self, frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "call":
            if not frame.f_code.co_filename.startswith(_TRACED):
                return None
            frame.f_trace_opcodes = True
            return self.trace
        if event == "opcode":
            self.step(frame.f_code, frame.f_lasti)
        return self.trace

    # Python 3.12 and later: sys.monitoring's instruction events (opcode tracing set from a
    # call event no longer takes effect there).
    def instruction(self, code: CodeType, offset: int) -> Any:
        if not code.co_filename.startswith(_TRACED):
            return sys.monitoring.DISABLE
        self.step(code, offset)
        return None


def _run_interrupted(
    action: Callable[[], None], target: int | None, spare: frozenset[str] = frozenset()
) -> tuple[int, bool]:
    """Run ``action`` with SIGINT raised at check point ``target``; return (count, hit).

    ``spare`` names functions whose own check points are not targets (see the lock test).
    """
    tracer = _InterruptAt(target, spare)
    interrupted = False
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is not None:
        tool = monitoring.DEBUGGER_ID
        monitoring.use_tool_id(tool, "interrupt-injection")
        monitoring.register_callback(tool, monitoring.events.INSTRUCTION, tracer.instruction)
        monitoring.set_events(tool, monitoring.events.INSTRUCTION)
    else:
        sys.settrace(tracer.trace)
    try:
        action()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if monitoring is not None:
            monitoring.set_events(tool, 0)
            monitoring.register_callback(tool, monitoring.events.INSTRUCTION, None)
            monitoring.free_tool_id(tool)
            monitoring.restart_events()
        else:
            sys.settrace(None)
    return tracer.count, interrupted


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".lockfile")))


@pytest.fixture(autouse=True)
def _default_sigint() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_acquire_interrupted_anywhere_holds_the_lock_or_nothing(tmp_path: Path) -> None:
    """acquire() returns holding the lock, or raises holding nothing and leaving no file."""
    lock_path = tmp_path / "token_cache.json.lockfile"
    lock = CrossProcessLock(lock_path, timeout=2)
    total, _ = _run_interrupted(lock.acquire, None)
    lock.release()
    assert total > 20
    for target in range(total):
        _, interrupted = _run_interrupted(lock.acquire, target)
        assert lock.is_held is not interrupted, f"interrupt at check point {target}"
        if lock.is_held:
            lock.release()
        assert not lock_path.exists(), f"lock file left by an interrupt at check point {target}"
        with CrossProcessLock(lock_path, timeout=0):  # another instance gets it at once
            pass


def test_release_interrupted_anywhere_gives_everything_back(tmp_path: Path) -> None:
    """A Ctrl-C anywhere in what release() calls still frees the lock and its file.

    The instructions of release() itself and of entering its deferral (the deferral's
    ``__enter__``, before it swaps the handler), before Ctrl-C is held back, are spared: no
    lock written in Python can cover its entry (the cache's own transactions release under a
    deferral taken earlier, so they do not depend on it).
    """
    lock_path = tmp_path / "token_cache.json.lockfile"
    lock = CrossProcessLock(lock_path, timeout=2)
    lock.acquire()
    spare = frozenset({"release", "__enter__"})
    total, _ = _run_interrupted(lock.release, None, spare)
    assert total > 10
    for target in range(total):
        lock.acquire()
        _run_interrupted(lock.release, target, spare)
        assert not lock.is_held, f"held after an interrupt at check point {target}"
        assert not lock_path.exists(), f"lock file left by an interrupt at check point {target}"
        with lock:
            pass


def test_ctrl_c_at_any_instant_of_a_write_loses_and_leaks_nothing(tmp_path: Path) -> None:
    """A transaction interrupted anywhere leaves a whole file, no leftovers, a free lock."""
    path = tmp_path / "token_cache.json"
    PersistedTokenCache(path).deserialize(json.dumps({"X": {"k": {"n": -1}}}))
    cache = PersistedTokenCache(path, lock_timeout=2)
    step = {"n": 0}

    def write() -> None:
        step["n"] += 1
        with cache.transaction():
            cache._cache.setdefault("X", {})[f"k{step['n']}"] = {"n": step["n"]}
            cache.has_state_changed = True

    # A Ctrl-C landing inside a finalizer is dropped by Python itself: not a target.
    spare = frozenset({"__del__"})
    total, _ = _run_interrupted(write, None, spare)
    assert total > 100
    for target in range(total):
        _run_interrupted(write, target, spare)
        assert _leftovers(tmp_path) == [], f"leftovers after an interrupt at check point {target}"
        on_disk = json.loads(path.read_bytes())
        assert on_disk["X"]["k"] == {"n": -1}
        # The instance is not stuck: another thread writes through it within its timeout.
        errors: list[BaseException] = []
        worker = threading.Thread(target=_capture(write, errors))
        worker.start()
        worker.join(timeout=10)
        assert not worker.is_alive()
        assert errors == [], f"after an interrupt at check point {target}: {errors}"
        assert f"k{step['n']}" in json.loads(path.read_bytes())["X"]
    assert not cache.store.lock.is_held


def _capture(action: Callable[[], None], errors: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            action()
        except BaseException as error:  # reported to the test thread
            errors.append(error)

    return run
