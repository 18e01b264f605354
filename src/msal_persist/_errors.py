"""Exceptions raised by msal-persist.

Every error derives from :class:`MsalPersistError`; each leaf also derives from the builtin
that existing ``except`` clauses already catch::

    Exception
    └── MsalPersistError
        ├── LockTimeoutError        (also TimeoutError)
        ├── CacheFileError          (also OSError)
        └── CacheLocationError      (also ValueError)

Messages name the file involved and never contain a token, an account name or a home
account id. Context travels as attributes, and every error survives pickling (so it crosses
``multiprocessing`` boundaries intact).
"""

from __future__ import annotations

import os


class MsalPersistError(Exception):
    """Base class of every error msal-persist raises."""


class LockTimeoutError(MsalPersistError, TimeoutError):
    """The cross-process lock could not be taken before the timeout.

    Attributes:
        path: The lock file.
        timeout: Seconds waited.
        holder_pid: The pid recorded in the lock file by its holder, if one could be read.
    """

    def __init__(self, path: str, timeout: float, holder_pid: int | None = None) -> None:
        """Describe a lock wait that ran out of time."""
        self.path = path
        self.timeout = timeout
        self.holder_pid = holder_pid
        holder = f"process {holder_pid}" if holder_pid is not None else "an unknown process"
        super().__init__(
            f"could not lock {path} within {timeout:g} s: it is held by {holder}",
        )

    def __reduce__(self) -> tuple[type[LockTimeoutError], tuple[str, float, int | None]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.path, self.timeout, self.holder_pid))


class CacheFileError(MsalPersistError, OSError):
    """The cache file (or its directory) cannot be read or written.

    Attributes:
        path: The file or directory concerned.
        operation: What was attempted, for example ``"read"`` or ``"write"``.
        reason: Why it failed, in words.
        errno: The operating system's error number, when there is one.
    """

    def __init__(
        self,
        path: str,
        operation: str,
        reason: str,
        errno: int | None = None,
    ) -> None:
        """Describe a failed file operation."""
        # OSError's own constructor would reinterpret positional arguments as
        # (errno, strerror, filename); set the fields explicitly instead.
        super().__init__(f"cannot {operation} token cache {path}: {reason}")
        self.path = path
        self.operation = operation
        self.reason = reason
        self.errno = errno
        self.filename = path

    def __str__(self) -> str:
        """Return the message (OSError would format errno and filename instead)."""
        return f"cannot {self.operation} token cache {self.path}: {self.reason}"

    def __reduce__(
        self,
    ) -> tuple[type[CacheFileError], tuple[str, str, str, int | None]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.path, self.operation, self.reason, self.errno))

    @classmethod
    def from_os_error(
        cls, path: str | os.PathLike[str], operation: str, error: OSError
    ) -> CacheFileError:
        """Wrap an :class:`OSError`, keeping its errno and its words but not its arguments."""
        reason = error.strerror or type(error).__name__
        return cls(os.fspath(path), operation, reason, error.errno)


class CacheLocationError(MsalPersistError, ValueError):
    """A cache path given by the caller or the environment cannot be used.

    Attributes:
        path: The rejected path, as given.
        reason: Why it was rejected.
    """

    def __init__(self, path: str, reason: str) -> None:
        """Describe a rejected cache location."""
        self.path = path
        self.reason = reason
        super().__init__(f"unusable token cache location {path!r}: {reason}")

    def __reduce__(self) -> tuple[type[CacheLocationError], tuple[str, str]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.path, self.reason))
