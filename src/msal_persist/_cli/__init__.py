"""The ``msal-persist`` command line tool: see, check and manage a shared MSAL token cache.

Commands, one module each over :mod:`._base` (exit statuses, errors, output, arguments):

- ``demo`` (:mod:`._demo`): several real processes share one cache; the first signs in,
  the others get their token silently (against the local stand-in authority of
  :mod:`msal_persist.testing`: no network, no real account).
- ``path`` and ``show`` (:mod:`._show`): where the default cache lives, which rule chose it
  and why higher rules did not; the accounts and tokens in a cache, never a secret.
- ``doctor`` (:mod:`._doctor`): check the location, permissions, content and lock of a cache.
- ``clear`` and ``remove`` (:mod:`._change`): delete every token, or one account's entries,
  through the cache's own transaction: under the cross-process lock, in one write.
- ``rotate-key`` and ``new-key`` (:mod:`._keys`): re-encrypt a cache under another key,
  and make a key; every command that reads a cache takes ``--key`` for an encrypted one.

Every rule is the library's. ``path``, ``show`` and ``doctor`` only read, through the
library's lock-free read (:mod:`._read`): they take no lock and never change a byte, not
even of a file that is not a valid cache.

Errors are one line on stderr, ``msal-persist: error: <file>: <problem>``, and the exit
status tells the class of problem (the table is made from :class:`ExitCode`):

"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import msal

from msal_persist import __version__
from msal_persist._errors import MsalPersistError

from . import _change, _demo, _doctor, _keys, _show
from ._base import (
    PROG,
    CommandError,
    ExitCode,
    Handler,
    exit_status_epilog,
    exit_status_table,
    report,
    wrap,
)

__all__ = ["ExitCode", "main"]

if __doc__ is not None:  # None under python -OO
    __doc__ += exit_status_table()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``msal-persist`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except (CommandError, MsalPersistError) as error:
        return report(error)
    except KeyboardInterrupt:
        sys.stderr.write(f"\n{PROG}: interrupted\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`msal-persist show | head -1`): stop quietly, and keep Python
        # from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.FAILED


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, each ``--help`` ending with the exit statuses."""
    common: dict[str, Any] = {
        "epilog": exit_status_epilog(),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=wrap("See, check and manage a process-safe MSAL token cache."),
        **common,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__} (msal {msal.__version__})",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, *, summary: str, description: str, handler: Handler
    ) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=summary, description=wrap(description), **common)
        command.set_defaults(handler=handler)
        return command

    for module in (_demo, _show, _doctor, _change, _keys):
        module.add_commands(add)
    return parser
