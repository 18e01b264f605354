"""File-system primitives shared by the cache file and its lock file.

Both live in directories other users or tools may also write to, so nothing here follows a
symbolic link, blocks on opening a FIFO or a device, or trusts the umask:

- :func:`open_regular` opens with ``O_NOFOLLOW | O_NONBLOCK`` and checks with ``fstat`` that
  the handle is a regular file before a byte is read or written;
- :func:`make_private_directories` creates every missing directory with mode 0700, set
  explicitly (``mkdir``'s mode is filtered by the umask: 0277 would leave a directory nobody
  can create files in, 000 would make a world-writable one).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "NOT_FOUND_ERRNOS",
    "NotRegularFileError",
    "kind_of",
    "make_private_directories",
    "open_regular",
]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
NOT_FOUND_ERRNOS: Final = frozenset({errno.ENOENT, errno.ENOTDIR})
"""Errors that mean nothing is there (a missing file, or a parent that is not a directory)."""

_NO_FOLLOW: Final = (
    getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)
# O_NOFOLLOW on a symlink fails with ELOOP on Linux, EMLINK on FreeBSD, EFTYPE on NetBSD.
_LINK_ERRNOS: Final = frozenset(
    {errno.ELOOP, errno.EMLINK, getattr(errno, "EFTYPE", errno.ELOOP)},
)


class NotRegularFileError(OSError):
    """The path names a symlink, a directory, a FIFO, a socket or a device, not a file.

    Attributes:
        kind: What it is, in words (``"a symbolic link"``, ``"a FIFO"``, ...).
    """

    def __init__(self, kind: str) -> None:
        """Say what was found instead of a regular file."""
        super().__init__(f"it is {kind}, not a regular file")
        self.kind = kind

    def __str__(self) -> str:
        """Return the message, not OSError's formatting of its arguments."""
        return f"it is {self.kind}, not a regular file"

    def __reduce__(self) -> tuple[type[NotRegularFileError], tuple[str]]:
        """Rebuild from the kind."""
        return (type(self), (self.kind,))


def kind_of(mode: int) -> str:
    """Name the type of file ``mode`` (from ``stat``) describes."""
    kinds = (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def open_regular(path: str | os.PathLike[str], flags: int) -> tuple[int, os.stat_result]:
    """Open ``path`` without following a link or blocking; return the descriptor and fstat.

    Raises:
        FileNotFoundError: Nothing is there (or a parent is not a directory).
        NotRegularFileError: It is a link, a directory, a FIFO, a socket or a device.
        OSError: Any other failure to open it.
    """
    try:
        fd = os.open(path, flags | _NO_FOLLOW)
    except OSError as error:
        if error.errno in _LINK_ERRNOS:
            raise NotRegularFileError("a symbolic link") from None
        if error.errno == errno.EISDIR:
            raise NotRegularFileError("a directory") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFileError(kind_of(st.st_mode))
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def make_private_directories(directory: Path) -> None:
    """Create ``directory`` and any missing parents, each with mode 0700 whatever the umask.

    Directories that already exist are left as they are.
    """
    missing: list[Path] = []
    for candidate in (directory, *directory.parents):
        if os.path.lexists(candidate):
            break
        missing.append(candidate)
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            continue  # made by another process meanwhile: theirs to shape
        # Only we can write in the parent just made (or chose), so the name is still ours.
        os.chmod(path, DIR_MODE)
