"""Keep Ctrl-C from landing between taking a resource and recording that it was taken.

Python delivers ``KeyboardInterrupt`` in the main thread between almost any two bytecodes. One
landing just after ``os.open`` created a lock file, or just after a thread lock was taken, but
before the code that would undo it knows it exists, leaves that resource taken for good. So
the steps that take or give up a lock run with SIGINT *deferred*: a signal that arrives then
is remembered and handed to the application's own handler once the step has finished (or
rolled back). The waits inside those steps stay interruptible (:func:`interruptible`), while
nothing is half-taken.

Only the main thread of the main interpreter runs Python signal handlers, so elsewhere this
costs nothing and does nothing. A SIGINT handler that is not a Python callable (``SIG_DFL``,
``SIG_IGN``) raises nothing in Python, so it is left alone.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C module behind signal
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any, Final

__all__ = ["checkpoint", "deferred_interrupts", "interruptible"]

_MAIN: Final = threading.main_thread()
_SIGINT: Final = int(signal.SIGINT)
# The C function itself: Python checks for signals right after each call returns, so the
# first call of a deferral must already be the swap (a Python wrapper would be checked first).
_swap: Final[Callable[[int, Any], Any]] = _signal.signal

Handler = Callable[[int, FrameType | None], Any]


class _Deferral:
    """The process-wide state of the deferral; only the main thread ever touches it."""

    previous: Handler | None = None
    pending = False


def _hold(_signum: int, _frame: FrameType | None) -> None:
    # A plain function, so that "is" recognises it (each access to a classmethod makes a
    # new bound method object).
    _Deferral.pending = True


def _restore() -> None:
    previous = _Deferral.previous
    if previous is None:
        return
    _Deferral.previous = None
    _swap(_SIGINT, previous)
    if _Deferral.pending:
        _Deferral.pending = False
        previous(_SIGINT, None)  # default_int_handler raises KeyboardInterrupt here


def _install() -> None:
    previous = _swap(_SIGINT, _hold)
    if previous is _hold:
        return
    if callable(previous):
        _Deferral.previous = previous
    else:  # SIG_DFL or SIG_IGN: no Python exception to hold back
        _swap(_SIGINT, previous)


class deferred_interrupts:  # noqa: N801 - used like the function it replaced: a with block
    """Hold SIGINT back for the duration of the block; deliver it at the end.

    Nested blocks deliver at the end of the outermost one. Code that must undo a step when
    interrupted catches the exception raised on exit, as it would any other. (A class, not a
    generator: every lock and every write passes through here several times.)
    """

    __slots__ = ("_outermost",)

    def __enter__(self) -> None:
        """Swap in the handler that only remembers a SIGINT (the first call made here)."""
        self._outermost = False
        try:
            previous = _swap(_SIGINT, _hold)
        except ValueError:  # not the main thread: Python runs no signal handler here
            return
        if previous is _hold:  # nested, or inside interruptible()'s re-install
            return
        if not callable(previous):  # SIG_DFL or SIG_IGN: no Python exception to hold back
            _swap(_SIGINT, previous)
            return
        _Deferral.previous = previous
        self._outermost = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Put the application's handler back and hand it a SIGINT that came meanwhile."""
        if self._outermost:
            self._outermost = False
            _restore()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Let SIGINT through during a wait inside a deferred block (nothing is half-taken then).

    A signal held back earlier is delivered on entry; once the wait is over, SIGINT is held
    back again, even when the wait was interrupted, so the cleanup that follows runs whole.
    """
    if _Deferral.previous is None or threading.current_thread() is not _MAIN:
        yield
        return
    outer = _Deferral.previous
    try:
        _restore()
        yield
    finally:
        _install()
        _Deferral.previous = outer


def checkpoint() -> None:
    """Deliver a held-back SIGINT now, at a point where nothing is half-taken."""
    if _Deferral.pending and threading.current_thread() is _MAIN:
        with interruptible():
            pass
