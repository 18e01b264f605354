"""Reading a cache without its lock, for the commands that must never change a byte.

``show``, ``doctor`` and the previews of ``clear`` and ``remove`` take no lock and move
nothing, not even a file that is no valid cache. They read through the library's own
lock-free read (:func:`~msal_persist._settle.read_settled`), which does not mistake a
peer's write in progress for a bad file; what is added here is the words for each way a
path can fail to be a cache, judged from one ``lstat`` before anything is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import NamedTuple

from msal_persist._codec import Codec, Decoded
from msal_persist._errors import CacheFileError
from msal_persist._file_store import FileStore
from msal_persist._settle import Reading, read_settled

from ._base import PROG, CommandError, ExitCode, quote

__all__ = [
    "Link",
    "codec_from",
    "describe_link",
    "inspect",
    "read",
    "read_document",
    "refuse_non_regular",
]


def inspect(path: Path) -> os.stat_result:
    """``lstat`` the cache file; refuse, in words, what is not a regular file there.

    The type comes from ``lstat`` before anything is opened: opening a FIFO or a device
    could block, and msal-persist never reads through a symbolic link.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CommandError(
            ExitCode.NO_CACHE, path, "no such file: nothing is cached here"
        ) from None
    except NotADirectoryError:
        raise CommandError(
            ExitCode.NO_CACHE, path, "no such file: a component of the path is not a directory"
        ) from None
    except OSError as error:
        raise CommandError(ExitCode.UNREADABLE, path, f"cannot read: {error.strerror}") from None
    refuse_non_regular(path, st)
    return st


def refuse_non_regular(path: Path, st: os.stat_result) -> None:
    """Refuse, in words, a cache path that ``st`` (its ``lstat``) says is no regular file."""
    if stat.S_ISLNK(st.st_mode):
        link = describe_link(path)
        problem = link.problem
        if not link.unresolvable:
            problem = f"cannot read: it is a symbolic link to {link.target}: {problem}; {link.fix}"
        raise CommandError(ExitCode.UNREADABLE, path, problem)
    if stat.S_ISDIR(st.st_mode):
        raise CommandError(ExitCode.NO_CACHE, path, "is a directory, not a token cache file")
    if not stat.S_ISREG(st.st_mode):
        raise CommandError(ExitCode.NO_CACHE, path, "is not a regular file")


def codec_from(spec: str | None) -> Codec | None:
    """The encrypting codec for ``--key`` (``None``: msal's plain JSON).

    Raises:
        CommandError: The ``encryption`` extra is not installed (exit 2).
        KeyUnavailableError: ``keyring`` finds no usable keyring.
    """
    if spec is None:
        return None
    try:
        from msal_persist._encryption import EncryptedCodec  # noqa: PLC0415

        return EncryptedCodec(spec)
    except ImportError as error:
        raise CommandError(ExitCode.USAGE, PROG, str(error)) from None


def read(path: Path, codec: Codec | None = None) -> Reading:
    """Read and decode a regular file without the lock (see :func:`inspect` first).

    The bytes may not be a cache document: :attr:`Reading.decoded` is then ``None`` and
    :attr:`Reading.problem` says why. ``codec`` opens an encrypted cache.

    Raises:
        DecryptionError: The cache is encrypted and ``codec`` cannot open it.
        KeyUnavailableError: ``codec``'s key cannot be had.
    """
    try:
        reading = read_settled(FileStore(path), codec)
    except CacheFileError as error:
        raise CommandError(ExitCode.UNREADABLE, path, f"cannot read: {error.reason}") from None
    if reading.snapshot.data is None:
        raise CommandError(ExitCode.NO_CACHE, path, "no such file: it was removed while reading")
    return reading


def read_document(path: Path, codec: Codec | None = None) -> Decoded:
    """Read the cache at ``path``, which must be a cache document (else exit 3)."""
    inspect(path)
    reading = read(path, codec)
    if reading.decoded is None:
        raise CommandError(ExitCode.NO_CACHE, path, f"not an msal token cache: {reading.problem}")
    return reading.decoded


class Link(NamedTuple):
    """Where a symbolic link at the cache path leads, and what to tell the user about it."""

    target: str
    problem: str
    fix: str
    unresolvable: bool = False


def describe_link(path: Path) -> Link:
    """Say where the symbolic link ``path`` leads, without opening anything (``stat`` only)."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    remove = f"remove the link (rm {quote(path)}); the next sign-in creates the file there"
    refused = "msal-persist neither reads nor writes through links"
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return Link(target, f"it leads nowhere, and {refused}", remove)
    except OSError as error:
        # A loop, or a directory on the way you may not search: the OS's words say it best.
        return Link(target, f"cannot read: {error.strerror}", remove, unresolvable=True)
    if not stat.S_ISREG(st.st_mode):
        return Link(target, f"{refused}, and it leads to no regular file", remove)
    return Link(
        target,
        refused,
        f"use the path of its target instead: {quote(os.path.realpath(path))}",
    )
