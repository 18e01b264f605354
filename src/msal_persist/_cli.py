"""The ``msal-persist`` command line tool: see, check and manage a shared MSAL token cache.

Commands:

- ``demo``: several real processes share one cache; the first signs in, the others get their
  token silently (against the local stand-in authority of :mod:`msal_persist.testing`: no
  network, no real account).
- ``path``: where the default cache lives, which rule chose it and why higher rules did not.
- ``show``: the accounts and tokens in a cache, never a secret.
- ``doctor``: check the location, permissions, content and lock of a cache.
- ``clear``: delete every token, under the cross-process lock.
- ``remove``: delete one account's entries in one write, under the cross-process lock.

``path``, ``show`` and ``doctor`` only read: they take no lock and never change a byte, not
even of a file that is not a valid cache.

Errors are one line on stderr, ``msal-persist: error: <file>: <problem>``, and the exit
status tells the class of problem:

===  ======================================================================================
0    success
1    a check failed: ``doctor`` found a FAIL, ``demo`` saw a process fail or no single
     sign-on, or the confirmation prompt was declined (nothing was changed)
2    usage: bad arguments, or ``clear``/``remove`` without ``--yes`` when stdin is not a
     terminal
3    no cache there: the file does not exist, is a directory or another non-regular file,
     or is not an msal token cache (for example invalid JSON)
4    the file cannot be read or written (permissions, I/O error, symlink loop, read-only)
5    another process held the cache's lock past ``--lock-timeout``
6    ``remove``: no account matches the given username or home account id
130  interrupted (Ctrl-C)
===  ======================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import msal

from . import __version__
from ._document import (
    SECTIONS,
    Decoded,
    NotACacheError,
    decode_document,
    encode_document,
    parse_document,
)
from ._errors import CacheFileError, CacheLocationError, LockTimeoutError, MsalPersistError
from ._files import kind_of
from ._locations import DEFAULT_APP_NAME, ENV_VAR, CacheLocation, default_cache_path
from ._lock import DEFAULT_LOCK_TIMEOUT, CrossProcessLock
from ._persistence import MAX_SET_ASIDE, FilePersistence
from ._process import pid_is_running
from ._text import printable
from ._token_cache import LOCK_FILE_SUFFIX, PersistedTokenCache

__all__ = ["main"]

PROG: Final = "msal-persist"

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_CACHE: Final = 3
EXIT_UNREADABLE: Final = 4
EXIT_LOCKED: Final = 5
EXIT_NO_ACCOUNT: Final = 6
EXIT_INTERRUPTED: Final = 130

_EXIT_CODES: Final = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "a check failed (doctor), demo failed or saw no single sign-on, or you said no"),
    (EXIT_USAGE, "usage: bad arguments, or clear/remove without --yes and no terminal"),
    (EXIT_NO_CACHE, "no cache there: missing, a directory, or not an msal cache (bad JSON)"),
    (EXIT_UNREADABLE, "the file cannot be read or written"),
    (EXIT_LOCKED, "another process held the lock past --lock-timeout"),
    (EXIT_NO_ACCOUNT, "remove: no account matches"),
    (EXIT_INTERRUPTED, "interrupted"),
)

_ACCESS_TOKEN: Final = "AccessToken"  # noqa: S105 - section names, not secrets
_REFRESH_TOKEN: Final = "RefreshToken"  # noqa: S105
_ID_TOKEN: Final = "IdToken"  # noqa: S105
_ACCOUNT: Final = "Account"
_APP_METADATA: Final = "AppMetadata"
_TOKEN_SECTIONS: Final = (_ACCESS_TOKEN, _REFRESH_TOKEN, _ID_TOKEN)
_ACCOUNT_SECTIONS: Final = (_ACCOUNT, *_TOKEN_SECTIONS)
_TOKEN_NAMES: Final = {
    _ACCESS_TOKEN: "access token",
    _REFRESH_TOKEN: "refresh token",
    _ID_TOKEN: "ID token",
}

_SETTLE_SECONDS: Final = 1.0
"""How long a read-only command re-reads unparsable bytes while a writer holds the lock.

Some peers (msal-extensions) rewrite the file in place, so bytes read outside the lock may be
a write in progress rather than corruption."""
_BIG_CACHE_BYTES: Final = 10 * 1024 * 1024
_LONG_LOCK_SECONDS: Final = 60.0
_STALE_GRACE_SECONDS: Final = 10.0
_MSAL_RENEWAL_SECONDS: Final = 300
"""msal treats an access token with less than this left as expired and refreshes it."""
_DEMO_TIMEOUT: Final = 60.0
_DEMO_MAX_PROCESSES: Final = 64


class _CommandError(Exception):
    """A failure to report as ``msal-persist: error: <subject>: <problem>``."""

    def __init__(self, code: int, subject: str | os.PathLike[str], problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.subject = os.fspath(subject)
        self.problem = problem


# -- entry point ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``msal-persist`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (_CommandError, MsalPersistError) as error:
        return _report(error)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`msal-persist show | head -1`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _report(error: _CommandError | MsalPersistError) -> int:
    """Print the one-line error for ``error`` and return its exit status."""
    if isinstance(error, _CommandError):
        subject, problem, code = error.subject, error.problem, error.code
    elif isinstance(error, LockTimeoutError):
        subject, problem, code = error.path, str(error), EXIT_LOCKED
    elif isinstance(error, CacheFileError):
        subject, problem = error.path, f"cannot {error.operation}: {error.reason}"
        code = EXIT_UNREADABLE
    elif isinstance(error, CacheLocationError):
        subject, problem, code = error.path, error.reason, EXIT_NO_CACHE
    else:
        subject, problem, code = PROG, str(error), EXIT_FAILED
    _error(subject, problem)
    return code


def _build_parser() -> argparse.ArgumentParser:
    epilog = "exit status:\n" + "\n".join(f"  {code:<3}  {text}" for code, text in _EXIT_CODES)
    common: dict[str, Any] = {
        "epilog": epilog,
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_wrap("See, check and manage a process-safe MSAL token cache."),
        **common,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__} (msal {msal.__version__})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="watch processes share one cache: one signs in, the others need not",
        description=_wrap(
            "Start N Python processes on one shared cache against a local stand-in authority "
            "(no network). The first signs in; the others start after it and get their "
            "token silently from the cache."
        ),
        **common,
    )
    demo.add_argument(
        "-n", "--processes", type=_process_count, default=4, metavar="N", help="default: 4"
    )
    demo.add_argument(
        "--cache",
        metavar="PATH",
        help="keep the shared cache in PATH (default: a temporary directory, removed after)",
    )
    demo.add_argument(
        "--token-lifetime",
        type=_seconds(minimum=1),
        default=3600,
        metavar="SECONDS",
        help="access token lifetime; below 300 every later process refreshes (default: 3600)",
    )
    demo.set_defaults(handler=_cmd_demo)

    path = commands.add_parser(
        "path",
        help="where the default cache lives and why",
        description=_wrap(
            "Show the default cache path, the rule that chose it and why others did not."
        ),
        **common,
    )
    _add_app_option(path)
    path.set_defaults(handler=_cmd_path)

    show = commands.add_parser(
        "show",
        help="list accounts and tokens (never a secret)",
        description=_wrap("List the accounts and tokens in a cache; secrets are never shown."),
        **common,
    )
    _add_path_argument(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")
    show.set_defaults(handler=_cmd_show)

    doctor = commands.add_parser(
        "doctor",
        help="check location, permissions, content and lock",
        description=_wrap("Check a cache and say how to fix what is wrong. Changes nothing."),
        **common,
    )
    _add_path_argument(doctor)
    doctor.set_defaults(handler=_cmd_doctor)

    clear = commands.add_parser(
        "clear",
        help="delete every token (sign everyone out)",
        description=_wrap("Delete the cache file under the cross-process lock."),
        **common,
    )
    _add_path_argument(clear)
    _add_change_options(clear)
    clear.set_defaults(handler=_cmd_clear)

    remove = commands.add_parser(
        "remove",
        help="delete one account's tokens",
        description=_wrap(
            "Remove an account and all its tokens (every client id) in one write, under the "
            "cross-process lock. App metadata stays."
        ),
        **common,
    )
    remove.add_argument("account", metavar="ACCOUNT", help="username or home account id")
    _add_path_argument(remove)
    _add_change_options(remove)
    remove.set_defaults(handler=_cmd_remove)
    return parser


def _wrap(text: str) -> str:
    # The help formatter keeps the epilog's table as written, so descriptions come pre-filled.
    return textwrap.fill(text, width=79)


def _add_app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        type=_app_name,
        default=DEFAULT_APP_NAME,
        metavar="NAME",
        help=f"application name of the default location (default: {DEFAULT_APP_NAME})",
    )


def _add_path_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help=f"the cache file (default: ${ENV_VAR} or the default location, see `{PROG} path`)",
    )
    _add_app_option(parser)


def _add_change_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "--lock-timeout",
        type=_seconds(minimum=0),
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


def _process_count(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 2 <= count <= _DEMO_MAX_PROCESSES:
        raise argparse.ArgumentTypeError(f"choose between 2 and {_DEMO_MAX_PROCESSES}")
    return count


def _seconds(*, minimum: float) -> Callable[[str], float]:
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


# -- output helpers -------------------------------------------------------------------------


# Every line passes through printable(): paths and fields of a cache file are someone
# else's text, and a newline or an escape sequence in them must not forge a line or drive
# the terminal.


def _say(*lines: str) -> None:
    sys.stdout.write("".join(f"{printable(line)}\n" for line in lines))


def _error(subject: str | os.PathLike[str], problem: str) -> None:
    sys.stderr.write(f"{PROG}: error: {printable(subject)}: {printable(problem)}\n")


def _quote(path: str | os.PathLike[str]) -> str:
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


def _duration(seconds: float) -> str:
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


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"{count} {noun}"
    if noun.endswith("y") and noun[-2:-1] not in set("aeiou"):
        return f"{count} {noun[:-1]}ies"
    return f"{count} {noun}s"


def _text(value: object) -> str | None:
    """A field as text: caches written by other tools may hold numbers or nulls anywhere."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else str(value)


def _timestamp(value: object) -> int | None:
    """A Unix time as msal stores it (a string of digits); ``None`` if absent or garbled."""
    try:
        return int(float(str(value)))
    except (ValueError, OverflowError):
        return None


# -- reading a cache without the lock -------------------------------------------------------


def _resolve(path: str | None, app: str) -> CacheLocation:
    try:
        return default_cache_path(app, explicit=path)
    except CacheLocationError as error:
        raise _CommandError(EXIT_NO_CACHE, error.path, error.reason) from None


def _load(path: Path) -> bytes:
    """Read the file's bytes without the lock; refuse what is not a readable regular file.

    The type comes from ``lstat`` before anything is opened: opening a FIFO or a device
    could block, and msal-persist never reads through a symbolic link.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise _CommandError(EXIT_NO_CACHE, path, "no such file: nothing is cached here") from None
    except NotADirectoryError:
        raise _CommandError(
            EXIT_NO_CACHE, path, "no such file: a component of the path is not a directory"
        ) from None
    except OSError as error:
        raise _CommandError(EXIT_UNREADABLE, path, f"cannot read: {error.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        link = _describe_link(path)
        problem = link.problem
        if not link.unresolvable:
            problem = f"cannot read: it is a symbolic link to {link.target}: {problem}; {link.fix}"
        raise _CommandError(EXIT_UNREADABLE, path, problem)
    if stat.S_ISDIR(st.st_mode):
        raise _CommandError(EXIT_NO_CACHE, path, "is a directory, not a token cache file")
    if not stat.S_ISREG(st.st_mode):
        # Opening a FIFO would block; a device is no cache either.
        raise _CommandError(EXIT_NO_CACHE, path, "is not a regular file")
    try:
        snapshot = FilePersistence(path).load()
    except CacheFileError as error:
        raise _CommandError(EXIT_UNREADABLE, path, f"cannot read: {error.reason}") from None
    if snapshot.data is None:
        raise _CommandError(EXIT_NO_CACHE, path, "no such file: it was removed while reading")
    return snapshot.data


class _Link(NamedTuple):
    """Where a symbolic link at the cache path leads, and what to tell the user about it."""

    target: str
    problem: str
    fix: str
    unresolvable: bool = False


def _describe_link(path: Path) -> _Link:
    """Say where the symbolic link ``path`` leads, without opening anything (``stat`` only)."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    remove = f"remove the link (rm {_quote(path)}); the next sign-in creates the file there"
    refused = "msal-persist neither reads nor writes through links"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return _Link(target, f"it leads nowhere, and {refused}", remove)
    except OSError as error:
        # A loop, or a directory on the way you may not search: the OS's words say it best.
        return _Link(target, f"cannot read: {error.strerror}", remove, unresolvable=True)
    if not stat.S_ISREG(st.st_mode):
        return _Link(target, f"{refused}, and it leads to no regular file", remove)
    return _Link(
        target,
        refused,
        f"use the path of its target instead: {_quote(os.path.realpath(path))}",
    )


def _read_settled(path: Path) -> tuple[bytes, dict[str, Any] | None, str]:
    """Read and parse without the lock; return the bytes, and the state or why it is bad.

    Bytes that do not parse while a peer holds the lock may be its in-place write in
    progress, so they are read again for up to a second before being called bad.
    """
    deadline = time.monotonic() + _SETTLE_SECONDS
    lock_path = Path(f"{path}{LOCK_FILE_SUFFIX}")
    while True:
        data = _load(path)
        try:
            return data, parse_document(data), ""
        except NotACacheError as error:
            if time.monotonic() >= deadline or not lock_path.exists():
                return data, None, str(error)
        time.sleep(0.05)


def _read_cache(path: Path) -> dict[str, Any]:
    _, state, problem = _read_settled(path)
    if state is None:
        raise _CommandError(EXIT_NO_CACHE, path, f"not an msal token cache: {problem}")
    return state


def _read_decoded(path: Path) -> Decoded:
    """Read without the lock and keep what msal can use, as ``PersistedTokenCache`` does."""
    try:
        return decode_document(_load(path))
    except NotACacheError:
        data, state, problem = _read_settled(path)
        if state is None:
            raise _CommandError(
                EXIT_NO_CACHE, path, f"not an msal token cache: {problem}"
            ) from None
        return decode_document(data)


_LEFT_OUT_REASONS: Final = 5


def _left_out(decoded: Decoded) -> str:
    """How many entries a cache leaves out and why, on one line (the same reasons counted)."""
    counts: dict[str, int] = {}
    for problem in decoded.problems:
        counts[problem] = counts.get(problem, 0) + 1
    reasons = [f"{p} ({n} times)" if n > 1 else p for p, n in counts.items()]
    if len(reasons) > _LEFT_OUT_REASONS:
        more = len(reasons) - _LEFT_OUT_REASONS
        reasons[_LEFT_OUT_REASONS:] = [f"and {_plural(more, 'other reason')}"]
    return f"{_plural(decoded.rejected, 'entry')} msal cannot use: {'; '.join(reasons)}"


def _entries(state: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    entries = state.get(section)
    return list(entries.values()) if isinstance(entries, dict) else []


def _home_id(entry: Mapping[str, Any]) -> str:
    return (_text(entry.get("home_account_id")) or "").casefold()


@dataclass
class _AccountView:
    """What ``show`` tells about one account: everything but secrets."""

    home_account_id: str
    usernames: list[str] = field(default_factory=list)
    sign_ins: list[dict[str, str | None]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "home_account_id": self.home_account_id,
            "username": self.usernames[0] if self.usernames else None,
            "sign_ins": self.sign_ins,
            "tokens": self.tokens,
        }


@dataclass(frozen=True)
class _Inventory:
    """A cache document summarised: accounts with their tokens, apps, foreign sections."""

    accounts: list[_AccountView]
    apps: list[dict[str, str | None]]
    other_sections: dict[str, int]

    @property
    def token_count(self) -> int:
        return sum(len(account.tokens) for account in self.accounts)

    def describe(self) -> str:
        return (
            f"{_plural(len(self.accounts), 'account')}, {_plural(self.token_count, 'token')}, "
            f"{_plural(len(self.apps), 'app')}"
        )


def _inventory(state: Mapping[str, Any], now: float) -> _Inventory:
    accounts: dict[str, _AccountView] = {}

    def view_of(entry: Mapping[str, Any]) -> _AccountView:
        raw = _text(entry.get("home_account_id")) or ""
        return accounts.setdefault(raw.casefold(), _AccountView(raw))

    for entry in _entries(state, _ACCOUNT):
        view = view_of(entry)
        username = _text(entry.get("username"))
        if username and username not in view.usernames:
            view.usernames.append(username)
        view.sign_ins.append(
            {
                name: _text(entry.get(name))
                for name in ("environment", "realm", "account_source", "authority_type")
            }
        )
    for section in _TOKEN_SECTIONS:
        for entry in _entries(state, section):
            view_of(entry).tokens.append(_token_view(section, entry, now))
    order = {section: index for index, section in enumerate(_TOKEN_SECTIONS)}
    for view in accounts.values():
        view.tokens.sort(
            key=lambda t: (order[t["type"]], t["client_id"] or "", t.get("target") or "")
        )
    apps = [
        {name: _text(entry.get(name)) for name in ("client_id", "environment", "family_id")}
        for entry in _entries(state, _APP_METADATA)
    ]
    other = {
        name: len(value) if isinstance(value, (dict, list)) else 1
        for name, value in state.items()
        if name not in SECTIONS
    }
    ordered = sorted(
        accounts.values(), key=lambda a: (not a.usernames, a.usernames[:1], a.home_account_id)
    )
    return _Inventory(ordered, apps, other)


def _token_view(section: str, entry: Mapping[str, Any], now: float) -> dict[str, Any]:
    # A whitelist of fields: "secret", and anything a peer may add, never leaves the file.
    view: dict[str, Any] = {
        "type": section,
        "client_id": _text(entry.get("client_id")),
        "environment": _text(entry.get("environment")),
        "realm": _text(entry.get("realm")),
    }
    if section != _ID_TOKEN:
        view["target"] = _text(entry.get("target"))
    if section == _REFRESH_TOKEN:
        view["family_id"] = _text(entry.get("family_id"))
        updated = _timestamp(entry.get("last_modification_time"))
        view["updated_ago"] = None if updated is None else max(0, int(now - updated))
    expires_on = _timestamp(entry.get("expires_on"))
    view["expires_on"] = expires_on
    view["expires_in"] = None if expires_on is None else int(expires_on - now)
    view["expired"] = None if expires_on is None else expires_on <= now
    return view


# -- demo -----------------------------------------------------------------------------------

_WORKER_CODE: Final = (
    "import sys\nfrom msal_persist._cli import demo_worker\nsys.exit(demo_worker(sys.argv[1:]))\n"
)
_SIGN_IN: Final = "sign-in"
_SILENT: Final = "silent"


@dataclass(frozen=True)
class _WorkerReport:
    """What one demo process did, as it reported it on its stdout."""

    pid: int
    source: str
    ms: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)
    contended: int = 0
    waited: float = 0.0
    error: str | None = None

    @classmethod
    def from_output(cls, pid: int, returncode: int, stdout: str, stderr: str) -> _WorkerReport:
        lines = stdout.strip().splitlines()
        try:
            data = json.loads(lines[-1])
            report = cls(
                pid=int(data["pid"]),
                source=str(data["source"]),
                ms=float(data["ms"]),
                hits={str(k): int(v) for k, v in data["hits"].items()},
                contended=int(data["contended"]),
                waited=float(data["waited"]),
                error=None if data["error"] is None else str(data["error"]),
            )
        except (IndexError, KeyError, TypeError, ValueError, AttributeError):
            last = stderr.strip().splitlines()[-1:] or [f"exited with status {returncode}"]
            return cls(pid, "failed", error=last[0])
        if returncode != 0 and report.error is None:
            return cls(pid, "failed", error=f"exited with status {returncode}")
        return report


def demo_worker(argv: Sequence[str]) -> int:
    """Body of one demo process: get a token through a shared cache, report as JSON.

    ``argv`` is ``[cache path, "sign-in" | "silent", access token lifetime]``.
    """
    from .testing import DEFAULT_SCOPES, LocalAuthority  # noqa: PLC0415 - only demo needs it

    path, role, lifetime = argv
    report: dict[str, Any] = {"pid": os.getpid(), "source": "failed", "ms": 0.0, "error": None}
    authority = LocalAuthority(access_token_lifetime=int(float(lifetime)))
    cache = PersistedTokenCache(path, lock_timeout=_DEMO_TIMEOUT)
    try:
        app = authority.public_client(token_cache=cache)
        started = time.perf_counter()
        if role == _SIGN_IN:
            flow = app.initiate_device_flow(DEFAULT_SCOPES)
            result = app.acquire_token_by_device_flow(flow)
        else:
            accounts = app.get_accounts()
            result = app.acquire_token_silent(DEFAULT_SCOPES, accounts[0]) if accounts else None
        report["ms"] = (time.perf_counter() - started) * 1000
        report["source"], report["error"] = _token_source(role, result, authority.hits_by_grant)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which fails the demo
        report["error"] = f"{type(error).__name__}: {error}"
    report.update(
        hits=authority.hits_by_grant,
        contended=cache.lock.contended,
        waited=cache.lock.waited,
    )
    sys.stdout.write(json.dumps(report) + "\n")
    return 0 if report["error"] is None else 1


def _token_source(
    role: str, result: Mapping[str, Any] | None, hits: Mapping[str, int]
) -> tuple[str, str | None]:
    if result is None:
        return "failed", "no account in the shared cache: single sign-on did not happen"
    if "access_token" not in result:
        return "failed", f"{result.get('error')}: {result.get('error_description')}"
    if role == _SIGN_IN:
        return "signed in", None
    if result.get("token_source") == "cache":
        return "cache", None
    if set(hits) == {"refresh_token"}:
        return "refreshed", None
    return "failed", f"token came from {sorted(hits)}, not from the cache"


def _cmd_demo(args: argparse.Namespace) -> int:
    temp_dir = None
    if args.cache is None:
        temp_dir = tempfile.mkdtemp(prefix="msal-persist-demo-")
        path = Path(temp_dir, "token_cache.json")
    else:
        path = _resolve(args.cache, DEFAULT_APP_NAME).path
    started = time.perf_counter()
    try:
        _say(f"demo: {args.processes} processes share {path}")
        reports = _run_demo(path, args.processes, args.token_lifetime)
    finally:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
    elapsed = (time.perf_counter() - started) * 1000
    for report in reports:
        detail = f"  {report.error}" if report.error else ""
        _say(f"pid {report.pid:<7} {report.source:<9} {report.ms:7.1f} ms{detail}")
    later = reports[1:]
    silent = [r for r in later if r.source in {"cache", "refreshed"}]
    sso = reports[0].source == "signed in" and len(silent) == len(later)
    grants: dict[str, int] = {}
    for report in reports:
        for grant, count in report.hits.items():
            grants[_grant_name(grant)] = grants.get(_grant_name(grant), 0) + count
    verdict = "yes" if sso else "NO"
    kept = "kept" if temp_dir is None else "removed with its temporary directory"
    _say(
        f"single sign-on: {verdict}: {sum(r.source == 'signed in' for r in reports)} sign-in, "
        f"{len(silent)} of {len(later)} later processes got a token without signing in",
        f"token endpoint hits: {sum(grants.values())}"
        + (
            " (" + ", ".join(f"{g}: {n}" for g, n in sorted(grants.items())) + ")" if grants else ""
        ),
        f"cache hits: {sum(r.source == 'cache' for r in reports)}, "
        f"refreshes: {sum(r.source == 'refreshed' for r in reports)}",
        f"lock waits: {sum(r.contended for r in reports)} "
        f"({sum(r.waited for r in reports) * 1000:.1f} ms in total)",
        f"cache file: {path} ({kept})",
        f"total time: {elapsed:.0f} ms",
    )
    return EXIT_OK if sso else EXIT_FAILED


def _grant_name(grant: str) -> str:
    return "device code" if grant.endswith(":device_code") else grant.replace("_", " ")


def _run_demo(path: Path, processes: int, lifetime: float) -> list[_WorkerReport]:
    deadline = time.monotonic() + _DEMO_TIMEOUT
    first = _run_workers(path, [_SIGN_IN], lifetime, deadline)
    if first[0].source != "signed in":
        return first
    # The others start together, after the sign-in: they share what it left in the file.
    return first + _run_workers(path, [_SILENT] * (processes - 1), lifetime, deadline)


def _run_workers(
    path: Path, roles: Sequence[str], lifetime: float, deadline: float
) -> list[_WorkerReport]:
    env = dict(os.environ)
    # The children must import this very copy of the package, installed or not.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter running our own code
            [sys.executable, "-c", _WORKER_CODE, str(path), role, str(lifetime)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for role in roles
    ]
    reports = []
    try:
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                reports.append(_WorkerReport(proc.pid, "failed", error="timed out"))
                continue
            reports.append(_WorkerReport.from_output(proc.pid, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return reports


# -- path -----------------------------------------------------------------------------------

_RULES: Final = (
    ("explicit", "a path given by the caller"),
    ("environment", f"${ENV_VAR}"),
    ("xdg-runtime-dir", "$XDG_RUNTIME_DIR/<app>/token_cache.json"),
    ("user-cache-dir", "the user cache directory"),
)


def _cmd_path(args: argparse.Namespace) -> int:
    location = _resolve(None, args.app)
    number = next(i for i, (rule, _) in enumerate(_RULES, 1) if rule == location.rule)
    _say(
        str(location.path), f"  chosen by rule {number} ({location.rule}): {_RULES[number - 1][1]}"
    )
    for index, reason in enumerate(location.reasons, 1):
        _say(f"  rule {index} ({_RULES[index - 1][0]}) did not apply: {reason}")
    if location.persistent:
        _say("  persists across reboots: yes")
    else:
        _say("  persists across reboots: no (a tmpfs, wiped when your last session ends)")
    try:
        st = os.stat(location.path)
    except OSError:
        _say("  file: does not exist yet")
    else:
        _say(f"  file: exists, {_size(st.st_size)}")
    return EXIT_OK


# -- show -----------------------------------------------------------------------------------


def _cmd_show(args: argparse.Namespace) -> int:
    path = _resolve(args.path, args.app).path
    # What msal can use, as PersistedTokenCache hands it: bad entries are left out and told.
    decoded = _read_decoded(path)
    now = time.time()
    inventory = _inventory(decoded.state, now)
    if args.json:
        document = {
            "cache": str(path),
            "accounts": [account.as_json() for account in inventory.accounts],
            "apps": inventory.apps,
            "other_sections": inventory.other_sections,
            "left_out": {"count": decoded.rejected, "problems": list(decoded.problems)},
        }
        _say(*json.dumps(document, indent=2).splitlines())  # escaped already: one per line
        return EXIT_OK
    _say(f"cache: {path}", f"  {inventory.describe()}")
    if decoded.rejected:
        _say(f"  left out: {_left_out(decoded)}")
    for account in inventory.accounts:
        _say("", *_account_lines(account))
    if inventory.apps:
        _say("", "apps:")
        for app in inventory.apps:
            family = f" (family {app['family_id']})" if app.get("family_id") else ""
            _say(f"  {app['client_id']} at {app['environment']}{family}")
    if inventory.other_sections:
        others = ", ".join(
            f"{name} ({_plural(count, 'entry')})"
            for name, count in sorted(inventory.other_sections.items())
        )
        _say("", f"other sections (kept as they are): {others}")
    return EXIT_OK


def _account_lines(account: _AccountView) -> Iterator[str]:
    yield ", ".join(account.usernames) or "(no account entry)"
    yield f"  home account id: {account.home_account_id or '(none)'}"
    for sign_in in account.sign_ins:
        source = sign_in["account_source"]
        how = f", via {source.rpartition(':')[2]}" if source else ""
        yield f"  signed in at {sign_in['environment']}, tenant {sign_in['realm']}{how}"
    for token in account.tokens:
        yield "  " + _token_line(token)


def _token_line(token: Mapping[str, Any]) -> str:
    parts = [f"{_TOKEN_NAMES[token['type']]:<13}", f"client {token['client_id']}"]
    if token.get("target"):
        parts.append(f"scopes {token['target']}")
    if token["type"] == _ID_TOKEN:
        parts.append(f"tenant {token['realm']}")
    if token.get("family_id"):
        parts.append(f"family {token['family_id']}")
    if token["expires_in"] is None:
        if token.get("updated_ago") is not None:
            parts.append(f"last updated {_duration(token['updated_ago'])} ago")
    elif token["expired"]:
        parts.append(f"expired {_duration(token['expires_in'])} ago")
    elif token["type"] == _ACCESS_TOKEN and token["expires_in"] < _MSAL_RENEWAL_SECONDS:
        parts.append(f"expires in {_duration(token['expires_in'])} (renewed at next use)")
    else:
        parts.append(f"expires in {_duration(token['expires_in'])}")
    return "  ".join(parts)


# -- doctor ---------------------------------------------------------------------------------

Status = Literal["OK", "WARN", "FAIL"]


@dataclass(frozen=True)
class _Check:
    status: Status
    name: str
    detail: str
    fix: str | None = None

    def lines(self) -> Iterator[str]:
        yield f"{self.status:<4}  {self.name}: {self.detail}"
        if self.fix:
            yield f"      fix: {self.fix}"


def _cmd_doctor(args: argparse.Namespace) -> int:
    checks = list(_diagnose(args.path, args.app))
    for check in checks:
        _say(*check.lines())
    counts = {status: sum(c.status == status for c in checks) for status in ("OK", "WARN", "FAIL")}
    _say(
        f"doctor: {_plural(len(checks), 'check')}: {counts['OK']} OK, "
        f"{_plural(counts['WARN'], 'warning')}, {_plural(counts['FAIL'], 'failure')}"
    )
    return EXIT_FAILED if counts["FAIL"] else EXIT_OK


def _diagnose(explicit: str | None, app: str) -> Iterator[_Check]:
    try:
        location = default_cache_path(app, explicit=explicit)
    except CacheLocationError as error:
        yield _Check(
            "FAIL",
            "location",
            f"{error.path}: {error.reason}",
            f"give the path of a file (or unset ${ENV_VAR} to use the default location)",
        )
        return
    path = location.path
    yield _check_location(location)
    yield from _check_directory(path.parent)
    data = None
    for check, data in _check_file(path):  # noqa: B007 - the last one holds the bytes read
        yield check
    if data is not None:
        yield from _check_content(path, data)
    yield _check_lock(Path(f"{path}{LOCK_FILE_SUFFIX}"))
    yield _check_leftovers(path)


def _check_location(location: CacheLocation) -> _Check:
    path = location.path
    if location.rule == "explicit":
        return _Check("OK", "location", f"{path} (given on the command line)")
    if location.rule == "environment":
        return _Check("OK", "location", f"{path} (from ${ENV_VAR})")
    if location.rule == "xdg-runtime-dir":
        return _Check(
            "OK",
            "location",
            f"{path} (in $XDG_RUNTIME_DIR: a tmpfs, wiped when your last session ends)",
        )
    unsafe = [r for r in location.reasons if r.startswith("XDG_RUNTIME_DIR=")]
    if unsafe:
        return _Check(
            "WARN",
            "location",
            f"{path} (user cache directory, persists across reboots) because {unsafe[0]}",
            "make $XDG_RUNTIME_DIR a directory you own with mode 0700, or set "
            f"${ENV_VAR} to choose the file yourself",
        )
    return _Check("OK", "location", f"{path} (user cache directory, persists across reboots)")


def _check_directory(directory: Path) -> Iterator[_Check]:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        yield _Check(
            "OK",
            "directory",
            f"{directory} does not exist yet; the first sign-in creates it with mode 0700",
        )
        return
    except OSError as error:
        yield _Check("FAIL", "directory", f"{directory}: cannot inspect it: {error.strerror}")
        return
    if not stat.S_ISDIR(st.st_mode):
        yield _Check(
            "FAIL",
            "directory",
            f"{directory} is not a directory",
            "choose a cache path inside a directory",
        )
        return
    if os.access(directory, os.W_OK | os.X_OK):
        yield _Check("OK", "directory", f"{directory} exists and you can write in it")
    else:
        yield _Check(
            "FAIL",
            "directory",
            f"{directory}: you cannot create files in it, so no token can be saved",
            f"chmod u+wx {_quote(directory)}",
        )
    yield _check_mode("directory permissions", directory, st, 0o700)


def _check_mode(name: str, path: Path, st: os.stat_result, expected: int) -> _Check:
    mode = stat.S_IMODE(st.st_mode)
    uid = os.geteuid()
    owner = "owned by you" if st.st_uid == uid else f"owned by uid {st.st_uid}, not you ({uid})"
    quoted = _quote(path)
    is_dir = stat.S_ISDIR(st.st_mode)
    # Whoever may rename entries in the directory can put their own cache in place of
    # yours, and your applications would then use their account (the sticky bit stops it).
    hijack = "replace your token cache with one holding their own account"
    if is_dir and st.st_uid not in {uid, 0}:
        return _Check(
            "FAIL",
            name,
            f"mode {mode:04o}, {owner}: its owner can {hijack}",
            f"use a cache path in a directory of your own, or: sudo chown {uid} {quoted}",
        )
    if is_dir and mode & 0o022 and not mode & stat.S_ISVTX:
        who = " and ".join(w for w, bits in (("group", 0o020), ("others", 0o002)) if mode & bits)
        return _Check(
            "FAIL",
            name,
            f"mode {mode:04o}, {owner}: {who} can rename files in it, so other users can {hijack}",
            f"chmod {expected:o} {quoted}",
        )
    if is_dir and mode & stat.S_ISVTX and mode & stat.S_IWOTH:
        return _Check(
            "WARN",
            name,
            f"mode {mode:04o}, {owner}: a shared directory where other users see the file names",
            f"keep the cache in a private directory (for example set ${ENV_VAR})",
        )
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
        what = "list and open entries in it" if is_dir else "access your tokens"
        return _Check(
            "WARN",
            name,
            f"mode {mode:04o}, {owner}: {who} can {what}",
            f"chmod {expected:o} {quoted}",
        )
    if st.st_uid != uid:
        return _Check(
            "WARN",
            name,
            f"mode {mode:04o}, {owner}: its owner can read and replace your tokens",
            f"use a cache path of your own, or: sudo chown {uid} {quoted}",
        )
    return _Check("OK", name, f"mode {mode:04o}, {owner}")


def _check_file(path: Path) -> Iterator[tuple[_Check, bytes | None]]:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        yield (
            _Check(
                "WARN",
                "file",
                f"{path} does not exist: nothing is cached yet, or this is the wrong path",
                f"sign in with an application that uses this cache; `{PROG} path` shows the "
                "default location",
            ),
            None,
        )
        return
    except OSError as error:
        yield _Check("FAIL", "file", f"{path}: cannot inspect it: {error.strerror}"), None
        return
    if stat.S_ISLNK(st.st_mode):
        # Never read through it: the library refuses links, so what lies behind is no cache.
        link = _describe_link(path)
        detail = f"{path} (a symlink to {link.target}): {link.problem}"
        yield _Check("FAIL", "file", detail, link.fix), None
        return
    try:
        data = _load(path)  # type checked on lstat first: a FIFO or a device is never opened
    except _CommandError as error:
        yield _Check("FAIL", "file", f"{path}: {error.problem}", _file_fix(path, error)), None
        return
    age = _duration(time.time() - st.st_mtime)
    if st.st_nlink > 1:
        yield (
            _Check(
                "WARN",
                "file",
                f"{path}: a regular file with {st.st_nlink} names (hard links), last written "
                f"{age} ago: each write replaces this name only, so the other names keep "
                "old tokens",
                f"find the other names (find / -samefile {_quote(path)} 2>/dev/null) and "
                "delete those no application uses",
            ),
            data,
        )
    else:
        yield _Check("OK", "file", f"{path}: a regular file, last written {age} ago"), data
    if not st.st_mode & stat.S_IWUSR:
        yield (
            _Check(
                "FAIL",
                "file permissions",
                f"mode {stat.S_IMODE(st.st_mode):04o}: read-only, so writers refuse to "
                "replace it and new sign-ins are not saved",
                f"chmod 600 {_quote(path)}",
            ),
            data,
        )
    else:
        yield _check_mode("file permissions", path, st, 0o600), data


def _file_fix(path: Path, error: _CommandError) -> str:
    quoted = _quote(path)
    if error.code == EXIT_UNREADABLE:
        return f"make it readable by you: chmod 600 {quoted}"
    return f"move it away (mv {quoted} {quoted}.old) or choose another cache path"


def _check_content(path: Path, data: bytes) -> Iterator[_Check]:
    try:
        decoded = decode_document(data)
    except NotACacheError as error:
        settled_data, settled, problem = _read_settled(path)
        if settled is None:
            yield _Check(
                "FAIL",
                "content",
                f"not an msal token cache: {problem or error}",
                f"the next msal-persist writer sets it aside as {path.name}.corrupt-<time>; "
                f"to start over now: {PROG} clear {shlex.quote(str(path))}",
            )
            return
        decoded = decode_document(settled_data)
    state = decoded.state
    now = time.time()
    inventory = _inventory(state, now)
    expired = sum(
        token["expired"] is True for account in inventory.accounts for token in account.tokens
    )
    detail = inventory.describe()
    if expired:
        detail += f" ({expired} expired, dropped on next use)"
    if inventory.other_sections:
        detail += "; also keeps sections of other tools: " + ", ".join(
            sorted(inventory.other_sections)
        )
    if decoded.rejected:
        # Not a FAIL: msal-persist hands msal the usable entries, and keeps the original.
        yield _Check(
            "WARN",
            "content",
            f"{_left_out(decoded)}; the next msal-persist write sets the original file aside "
            f"as {path.name}.corrupt-<time> and keeps the usable entries: {detail}",
        )
    else:
        yield _Check("OK", "content", f"a valid msal token cache: {detail}")
    entries = sum(len(v) for v in state.values() if isinstance(v, dict))
    size = f"{_size(len(data))}, {_plural(entries, 'entry')}"
    if len(data) > _BIG_CACHE_BYTES:
        yield _Check(
            "WARN",
            "size",
            f"{size}: every write rewrites the whole file",
            f"remove accounts you no longer use: {PROG} remove ACCOUNT",
        )
    else:
        yield _Check("OK", "size", size)


def _check_lock(lock_path: Path) -> _Check:
    try:
        st = os.lstat(lock_path)
    except (FileNotFoundError, NotADirectoryError):
        return _Check("OK", "lock", f"not held (no {lock_path.name})")
    except OSError as error:
        return _Check("FAIL", "lock", f"{lock_path}: cannot inspect it: {error.strerror}")
    refused = _refused_lock_file(lock_path, st)
    if refused is not None:
        return refused
    return _judge_lock_holder(lock_path, time.time() - st.st_mtime)


def _refused_lock_file(lock_path: Path, st: os.stat_result) -> _Check | None:
    """A FAIL for what writers refuse at once as a lock file (see CrossProcessLock.acquire).

    Only a regular file with one name can be a lock file. Judged on ``lstat`` alone:
    nothing here opens or follows it.
    """
    quoted = _quote(lock_path)
    if stat.S_ISDIR(st.st_mode):
        return _Check(
            "FAIL",
            "lock",
            f"{lock_path} is a directory, so no writer can ever take the lock",
            f"rmdir {quoted}",
        )
    refused = "which no MSAL tool creates: writers refuse it, so no sign-in can be saved"
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(lock_path)
        except OSError:
            target = "?"
        return _Check(
            "FAIL",
            "lock",
            f"{lock_path} is a symbolic link (to {target}), {refused}",
            f"rm {quoted} (this removes the link, not its target)",
        )
    if not stat.S_ISREG(st.st_mode):
        return _Check(
            "FAIL", "lock", f"{lock_path} is {kind_of(st.st_mode)}, {refused}", f"rm {quoted}"
        )
    if st.st_nlink > 1:
        return _Check(
            "FAIL",
            "lock",
            f"{lock_path} has {st.st_nlink} names (hard links), {refused}",
            f"rm {quoted} (the other names stay)",
        )
    return None


def _judge_lock_holder(lock_path: Path, age: float) -> _Check:
    """Judge a lock file that is a regular file with one name, from the pid it records."""
    quoted = _quote(lock_path)
    pid = CrossProcessLock(lock_path).holder_pid()
    if pid is None:
        if age < _STALE_GRACE_SECONDS:
            return _Check("OK", "lock", f"held for {_duration(age)} by a process that left no pid")
        return _Check(
            "WARN",
            "lock",
            f"{lock_path.name} names no process and is {_duration(age)} old",
            "none needed: the next writer removes it if no process holds it",
        )
    if not pid_is_running(pid):
        return _Check(
            "WARN",
            "lock",
            f"stale: left by process {pid}, which is no longer running",
            f"none needed: the next writer removes it within a second (or: rm {quoted})",
        )
    if age > _LONG_LOCK_SECONDS:
        return _Check(
            "WARN",
            "lock",
            f"held by running process {pid} for {_duration(age)}: writers wait for it",
            f"see what process {pid} is doing (ps -p {pid}); stop it if it hangs",
        )
    return _Check("OK", "lock", f"held by running process {pid} for {_duration(age)}")


def _check_leftovers(path: Path) -> _Check:
    try:
        names = os.listdir(path.parent)
    except OSError:
        return _Check("OK", "leftovers", "none (no directory)")
    temp_prefix = f".{path.name}."
    temps = [n for n in names if n.startswith(temp_prefix) and n.endswith(".tmp")]
    dead = [n for n in temps if not _temp_writer_alive(n[len(temp_prefix) : -len(".tmp")])]
    corrupt = sorted(n for n in names if n.startswith(f"{path.name}.corrupt-"))
    if not dead and not corrupt:
        return _Check("OK", "leftovers", "no temp files of crashed writers, no set-aside copies")
    found = []
    if dead:
        found.append(f"{_plural(len(dead), 'temp file')} of crashed writers")
    if corrupt:
        found.append(
            f"{_plural(len(corrupt), 'set-aside copy')} ({path.name}.corrupt-*; writers keep "
            f"at most {MAX_SET_ASIDE}, deleting the oldest)"
        )
    leftovers = " ".join(_quote(path.parent / name) for name in [*dead, *corrupt])
    return _Check(
        "WARN",
        "leftovers",
        " and ".join(found) + ": they may hold tokens",
        f"delete them when you no longer need them: rm {leftovers}",
    )


def _temp_writer_alive(stem: str) -> bool:
    pid = stem.partition("-")[0]
    return not pid.isdigit() or pid_is_running(int(pid))


# -- clear and remove -----------------------------------------------------------------------


def _confirm(question: str, *, assume_yes: bool, path: Path) -> bool:
    """Ask ``question`` on the terminal; without one, refuse unless ``--yes`` was given."""
    if assume_yes:
        return True
    if sys.stdin is None or not sys.stdin.isatty():
        raise _CommandError(
            EXIT_USAGE, path, "stdin is not a terminal, so nobody can confirm: pass --yes"
        )
    sys.stderr.write(f"{printable(question)} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if answer.strip().lower() in {"y", "yes"}:
        return True
    sys.stderr.write(f"{PROG}: nothing changed in {printable(path)}\n")
    return False


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    lock = CrossProcessLock(f"{path}{LOCK_FILE_SUFFIX}", timeout=timeout)
    try:
        lock.acquire()
    except LockTimeoutError as error:
        holder = f"process {error.holder_pid}" if error.holder_pid else "another process"
        raise _CommandError(
            EXIT_LOCKED,
            path,
            f"{holder} held the lock ({lock.path.name}) for more than {timeout:g} s; "
            "nothing changed",
        ) from None
    except CacheFileError as error:
        # A lock path writers refuse (a symlink, a FIFO, ...): said at once, never waited on.
        raise _CommandError(
            EXIT_UNREADABLE,
            error.path,
            f"cannot {error.operation}: {error.reason}; nothing changed",
        ) from None
    try:
        yield
    finally:
        lock.release()


def _cmd_clear(args: argparse.Namespace) -> int:
    path = _resolve(args.path, args.app).path
    _, state, problem = _read_settled(path)
    what = (
        f"every token ({_inventory(state, time.time()).describe()})"
        if state is not None
        else f"the file (it is not a valid token cache: {problem})"
    )
    if not _confirm(f"Delete {what} in {path}?", assume_yes=args.yes, path=path):
        return EXIT_FAILED
    with _locked(path, args.lock_timeout):
        removed = FilePersistence(path).remove()
    if not removed:
        raise _CommandError(EXIT_NO_CACHE, path, "no such file: someone else removed it first")
    _say(f"cleared {path}: deleted {what}")
    return EXIT_OK


def _cmd_remove(args: argparse.Namespace) -> int:
    path = _resolve(args.path, args.app).path
    state = _read_cache(path)
    matches = _matching_accounts(state, args.account)
    if not matches:
        raise _CommandError(EXIT_NO_ACCOUNT, path, f"no account matches; `{PROG} show` lists them")
    names = _describe_accounts(state, matches)
    if not _confirm(
        f"Remove {names} and all its tokens from {path}?", assume_yes=args.yes, path=path
    ):
        return EXIT_FAILED
    persistence = FilePersistence(path)
    with _locked(path, args.lock_timeout):
        # Decide again on the newest content: another process may have written meanwhile.
        snapshot = persistence.load()
        if snapshot.data is None:
            raise _CommandError(EXIT_NO_CACHE, path, "no such file: someone removed it meanwhile")
        try:
            decoded = decode_document(snapshot.data)
        except NotACacheError as error:
            raise _CommandError(EXIT_NO_CACHE, path, f"not an msal token cache: {error}") from None
        state = decoded.state
        matches = _matching_accounts(state, args.account)
        if not matches:
            raise _CommandError(EXIT_NO_ACCOUNT, path, "no account matches any more")
        names = _describe_accounts(state, matches)
        remaining, removed = _without_accounts(state, matches)
        if decoded.rejected:
            # As the cache itself does: the original keeps every byte, the file keeps only
            # what msal can use, and only strict JSON is written.
            _say(f"kept the original as {persistence.keep_copy(snapshot.data)}")
        persistence.save(encode_document(remaining))
    counts = ", ".join(
        _plural(removed[section], _TOKEN_NAMES.get(section, "account entry"))
        for section in _ACCOUNT_SECTIONS
    )
    _say(f"removed {names} from {path}: {counts}")
    return EXIT_OK


def _matching_accounts(state: Mapping[str, Any], wanted: str) -> set[str]:
    """Home account ids (case-folded) of accounts whose username or home account id match."""
    key = wanted.strip().casefold()
    matches = set()
    for entry in _entries(state, _ACCOUNT):
        username = (_text(entry.get("username")) or "").casefold()
        if key and key in {username, _home_id(entry)}:
            matches.add(_home_id(entry))
    for section in _TOKEN_SECTIONS:
        for entry in _entries(state, section):
            if key and _home_id(entry) == key:
                matches.add(key)
    return matches


def _describe_accounts(state: Mapping[str, Any], home_ids: set[str]) -> str:
    names = []
    for home_id in sorted(home_ids):
        usernames = sorted(
            {
                _text(e.get("username")) or ""
                for e in _entries(state, _ACCOUNT)
                if _home_id(e) == home_id
            }
            - {""}
        )
        label = ", ".join(usernames) or "an account with no username"
        names.append(f"{label} (home account id {home_id})")
    return " and ".join(names)


def _without_accounts(
    state: Mapping[str, Any], home_ids: set[str]
) -> tuple[dict[str, Any], dict[str, int]]:
    remaining = dict(state)
    removed = {}
    for section in _ACCOUNT_SECTIONS:
        entries = state.get(section)
        if not isinstance(entries, dict):
            removed[section] = 0
            continue
        kept = {key: entry for key, entry in entries.items() if _home_id(entry) not in home_ids}
        removed[section] = len(entries) - len(kept)
        remaining[section] = kept
    return remaining, removed
