"""What every command shares: exit statuses, the one-line error, output, common arguments.

Every line the tool prints passes through :func:`~msal_persist._text.printable`: paths and
fields of a cache file are someone else's text, and a newline or an escape sequence in them
must not forge a line or drive the terminal.
"""

from __future__ import annotations

import argparse
import enum
import os
import shlex
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from msal_persist._errors import (
    CacheFileError,
    CacheLocationError,
    DecryptionError,
    KeyUnavailableError,
    LockTimeoutError,
    MsalPersistError,
    StoreUnavailableError,
)
from msal_persist._locations import DEFAULT_APP_NAME, ENV_VAR, CacheLocation, default_cache_path
from msal_persist._lock import DEFAULT_LOCK_TIMEOUT
from msal_persist._text import printable

__all__ = [
    "PROG",
    "AddCommand",
    "Check",
    "CommandError",
    "ExitCode",
    "Handler",
    "add_app_option",
    "add_change_options",
    "add_path_argument",
    "duration",
    "exit_status_epilog",
    "exit_status_table",
    "key_spec",
    "plural",
    "quote",
    "report",
    "resolve",
    "say",
    "seconds",
    "size",
    "wrap",
]

PROG: Final = "msal-persist"


class ExitCode(enum.IntEnum):
    """The exit statuses of ``msal-persist``, each with the words that document it.

    ``summary`` is what the README says of the status (checked by the tests); ``--help``
    and the package docstring show :attr:`description`, the summary with its details.
    """

    summary: str
    detail: str

    def __new__(cls, value: int, summary: str, detail: str = "") -> ExitCode:
        """Make a member numbered ``value`` that carries its documentation."""
        member = int.__new__(cls, value)
        member._value_ = value
        member.summary = summary
        member.detail = detail
        return member

    OK = 0, "success"
    FAILED = (
        1,
        "a check failed (doctor), demo failed or saw no single sign-on, or you answered no",
    )
    USAGE = (
        2,
        "usage",
        "bad arguments, or clear/remove without --yes when stdin is not a terminal",
    )
    NO_CACHE = (
        3,
        "no cache there (missing, a directory, not an msal cache)",
        "a FIFO or a device counts as missing, invalid JSON as not an msal cache",
    )
    UNREADABLE = (
        4,
        "the file cannot be read or written",
        "permissions, I/O error, symlink loop, read-only file, refused lock file",
    )
    LOCKED = 5, "another process held the lock past --lock-timeout"
    NO_ACCOUNT = 6, "remove found no such account"
    NO_KEY = (
        7,
        "the cache is encrypted and cannot be opened",
        "no --key, the wrong key, a changed file, or the key cannot be had (keyring)",
    )
    INTERRUPTED = 130, "interrupted", "Ctrl-C"

    @property
    def description(self) -> str:
        """The summary, and its details after a colon."""
        return f"{self.summary}: {self.detail}" if self.detail else self.summary


def exit_status_epilog() -> str:
    """The ``exit status:`` section every ``--help`` ends with."""
    lines = [
        textwrap.fill(
            code.description,
            width=79,
            initial_indent=f"  {code.value:<3}  ",
            subsequent_indent=" " * 7,
        )
        for code in ExitCode
    ]
    return "exit status:\n" + "\n".join(lines)


def exit_status_table() -> str:
    """The exit statuses as a reStructuredText table, for the package docstring."""
    width = 86
    rule = f"===  {'=' * width}"
    rows = [
        textwrap.fill(
            code.description,
            width=width + 5,
            initial_indent=f"{code.value:<3}  ",
            subsequent_indent=" " * 5,
        )
        for code in ExitCode
    ]
    return "\n".join([rule, *rows, rule]) + "\n"


class CommandError(Exception):
    """A failure to report as ``msal-persist: error: <subject>: <problem>``."""

    def __init__(self, code: ExitCode, subject: str | os.PathLike[str], problem: str) -> None:
        """Say what failed (``subject``: usually the file), why, and with which status."""
        super().__init__(problem)
        self.code = code
        self.subject = os.fspath(subject)
        self.problem = problem


def report(error: CommandError | MsalPersistError) -> ExitCode:
    """Print the one-line error for ``error`` on stderr and return its exit status."""
    if isinstance(error, CommandError):
        subject, problem, code = error.subject, error.problem, error.code
    elif isinstance(error, LockTimeoutError):
        subject, problem, code = error.path, str(error), ExitCode.LOCKED
    elif isinstance(error, CacheFileError):
        subject, problem = error.path, f"cannot {error.operation}: {error.reason}"
        code = ExitCode.UNREADABLE
    elif isinstance(error, StoreUnavailableError):
        subject, problem = error.store, f"cannot {error.operation}: {error.reason}"
        code = ExitCode.UNREADABLE
    elif isinstance(error, CacheLocationError):
        subject, problem, code = error.path, error.reason, ExitCode.NO_CACHE
    elif isinstance(error, DecryptionError):
        subject, problem, code = error.path, f"cannot decrypt: {error.reason}", ExitCode.NO_KEY
    elif isinstance(error, KeyUnavailableError):
        subject, problem, code = error.source, error.reason, ExitCode.NO_KEY
    else:
        subject, problem, code = PROG, str(error), ExitCode.FAILED
    sys.stderr.write(f"{PROG}: error: {printable(subject)}: {printable(problem)}\n")
    return code


# -- output ---------------------------------------------------------------------------------


def say(*lines: str) -> None:
    """Print ``lines`` on stdout, each made printable."""
    sys.stdout.write("".join(f"{printable(line)}\n" for line in lines))


def quote(path: str | os.PathLike[str]) -> str:
    """``path`` quoted for a shell command the user may paste, on one printable line.

    ``shlex.quote`` keeps a newline or an escape character raw; bash, zsh and ksh read the
    ``$'...'`` form back to the very same name.
    """
    text = os.fspath(path)
    if printable(text) == text:
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c_char(char) for char in text) + "'"


def _ansi_c_char(char: str) -> str:
    if char in "\\'":
        return "\\" + char
    if printable(char) == char:
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def duration(seconds: float) -> str:
    """Say how long ``seconds`` is, to the two largest units: ``"59m 58s"``, ``"3d 04h"``."""
    whole = int(abs(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def size(count: int) -> str:
    """Say how big ``count`` bytes are."""
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, in the plural unless there is one: ``"2 copies"``."""
    if count == 1:
        return f"{count} {noun}"
    if noun.endswith("y") and noun[-2:-1] not in set("aeiou"):
        return f"{count} {noun[:-1]}ies"
    return f"{count} {noun}s"


@dataclass(frozen=True)
class Check:
    """One finding of ``doctor``: a status, what was checked, what was found, a fix."""

    status: Literal["OK", "WARN", "FAIL"]
    name: str
    detail: str
    fix: str | None = None

    def lines(self) -> Iterator[str]:
        """The finding as printed: one line, and one more for the fix."""
        yield f"{self.status:<4}  {self.name}: {self.detail}"
        if self.fix:
            yield f"      fix: {self.fix}"


# -- arguments ------------------------------------------------------------------------------

Handler = Callable[[argparse.Namespace], int]
"""What runs a command: it returns the exit status or raises a CommandError."""


class AddCommand(Protocol):
    """Adds one command to the parser; the package's ``__init__`` hands it to each module."""

    def __call__(
        self, name: str, *, summary: str, description: str, handler: Handler
    ) -> argparse.ArgumentParser:
        """Add ``name`` (``summary`` in the list of commands) that ``handler`` runs."""
        ...


def wrap(text: str) -> str:
    """Fill ``text`` to the terminal's usual width, for a description."""
    # The help formatter keeps the epilog's table as written, so descriptions come pre-filled.
    return textwrap.fill(text, width=79)


def add_app_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--app NAME``, the application name of the default location."""
    parser.add_argument(
        "--app",
        type=_app_name,
        default=DEFAULT_APP_NAME,
        metavar="NAME",
        help=f"application name of the default location (default: {DEFAULT_APP_NAME})",
    )


def add_path_argument(parser: argparse.ArgumentParser) -> None:
    """Add the optional ``PATH`` of the cache file, ``--app`` and ``--key``."""
    parser.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help=f"the cache file (default: ${ENV_VAR} or the default location, see `{PROG} path`)",
    )
    add_app_option(parser)
    parser.add_argument(
        "--key",
        type=key_spec,
        metavar="SOURCE",
        help="the key of an encrypted cache, as the application gives it: keyring, "
        "keyring:NAME, env:VARIABLE or file:PATH (needs msal-persist[encryption])",
    )


_KEY_KINDS: Final = ("keyring", "env", "file")


def key_spec(text: str) -> str:
    """An argument type: the text form of a key source (its shape only; never a key)."""
    kind, colon, rest = text.partition(":")
    if kind not in _KEY_KINDS or (kind != "keyring" and not rest) or (colon and not rest):
        raise argparse.ArgumentTypeError(
            f"{text!r}: use keyring, keyring:NAME, env:VARIABLE or file:PATH"
        )
    return text


def add_change_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--yes`` and ``--lock-timeout``, for the commands that change a cache."""
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--lock-timeout",
        type=seconds(minimum=0),
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help=f"wait this long for another process's lock (default: {DEFAULT_LOCK_TIMEOUT:g})",
    )


def _app_name(text: str) -> str:
    try:
        default_cache_path(text, environ={})
    except CacheLocationError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error.reason}") from None
    return text


def seconds(*, minimum: float) -> Callable[[str], float]:
    """An argument type: a finite number of seconds, at least ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not minimum <= value < float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r}: must be at least {minimum:g}")
        return value

    parse.__name__ = "seconds"  # argparse names the type in its messages
    return parse


def resolve(path: str | None, app: str) -> CacheLocation:
    """The cache location for ``PATH`` and ``--app``, as the library chooses it."""
    try:
        return default_cache_path(app, explicit=path)
    except CacheLocationError as error:
        raise CommandError(ExitCode.NO_CACHE, error.path, error.reason) from None
