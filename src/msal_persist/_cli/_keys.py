"""Encrypted caches on the command line: ``--key``, ``rotate-key`` and ``new-key``.

Every command that reads a cache takes ``--key SOURCE`` (the text forms of
:func:`~msal_persist._keys.key_source`: ``keyring``, ``keyring:NAME``, ``env:VARIABLE``,
``file:PATH``), the same key the application uses; a key itself is never an argument,
since every user of the machine can read command lines.
"""

from __future__ import annotations

import argparse

from msal_persist._file_store import FileStore
from msal_persist._keys import new_key_text
from msal_persist._token_cache import PersistedTokenCache

from ._base import (
    AddCommand,
    ExitCode,
    add_change_options,
    add_path_argument,
    key_spec,
    resolve,
    say,
)
from ._change import confirm
from ._read import codec_from, read_document

__all__ = ["add_commands"]


def add_commands(add: AddCommand) -> None:
    """Add ``rotate-key`` and ``new-key``."""
    rotate = add(
        "rotate-key",
        summary="re-encrypt a cache under another key (or in plaintext)",
        description=(
            "Read the cache with --key (or as plaintext without it) and write it again with "
            "--to, under the cache's lock, in one write. Every application sharing the cache "
            "then needs the new key; a keyring or file key is read again when the cache turns "
            "out to be sealed under another one. The old key is not deleted."
        ),
        handler=_cmd_rotate_key,
    )
    add_path_argument(rotate)
    rotate.add_argument(
        "--to",
        type=_target,
        required=True,
        metavar="SOURCE",
        help="the new key (keyring:NAME, env:VARIABLE, file:PATH), or 'none' for plaintext",
    )
    add_change_options(rotate)
    add(
        "new-key",
        summary="print a fresh random key, for env:VARIABLE or file:PATH",
        description=(
            "Print 32 random bytes in base64: store them where the application reads its "
            "key (a secret manager, a mounted file, an environment variable)."
        ),
        handler=_cmd_new_key,
    )


def _target(text: str) -> str:
    return text if text == "none" else key_spec(text)


def _cmd_rotate_key(args: argparse.Namespace) -> int:
    path = resolve(args.path, args.app).path
    read_document(path, codec_from(args.key))  # exits 3 or 7 before anything is asked
    cache = PersistedTokenCache(
        store=FileStore(path, lock_timeout=args.lock_timeout), codec=codec_from(args.key)
    )
    target = None if args.to == "none" else args.to
    if target is not None:
        codec_from(target)  # refuses a missing extra or keyring before anything is asked
    new = "in plaintext" if target is None else f"under the key from {target}"
    question = f"Rewrite {path} {new}? Every application sharing it will need that key."
    if not confirm(question, assume_yes=args.yes, path=path):
        return ExitCode.FAILED
    cache.reencrypt(target)
    key_id = getattr(cache.codec, "key_id", None)
    say(f"rewrote {path} " + (f"under key {key_id}" if key_id else "in plaintext"))
    return ExitCode.OK


def _cmd_new_key(_args: argparse.Namespace) -> int:
    say(new_key_text())
    return ExitCode.OK
