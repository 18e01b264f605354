"""Exceptions raised by msal-persist.

Every error derives from :class:`MsalPersistError`; each leaf also derives from the builtin
that existing ``except`` clauses already catch::

    Exception
    └── MsalPersistError
        ├── LockTimeoutError        (also TimeoutError)
        ├── CacheFileError          (also OSError)
        ├── CacheLocationError      (also ValueError)
        ├── DecryptionError         (also ValueError)
        ├── KeyUnavailableError     (also RuntimeError)
        ├── StoreUnavailableError   (also ConnectionError)
        └── LeaseExpiredError       (also TimeoutError)

Messages name the file (or the store) involved and never contain a token, an account name,
a home account id or a byte of an encryption key. Context travels as attributes, and every
error survives pickling (so it crosses ``multiprocessing`` boundaries intact).
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


class DecryptionError(MsalPersistError, ValueError):
    """The cache is encrypted and cannot be decrypted with the key this process has.

    The key is wrong, the file was tampered with, or no key was given at all. The stored
    bytes are left exactly as they are: one misconfigured process must not sign every other
    process out.

    Attributes:
        path: The cache (its file, or the store's name).
        key_id: The id of the key the cache says it was encrypted with, if readable.
        expected_key_id: The id of this process's key (``None``: no key was given).
        reason: Why it failed, in words.
    """

    def __init__(
        self,
        path: str,
        key_id: str | None,
        expected_key_id: str | None,
        reason: str,
    ) -> None:
        """Describe a cache this process cannot decrypt."""
        self.path = path
        self.key_id = key_id
        self.expected_key_id = expected_key_id
        self.reason = reason
        named = "" if key_id is None or key_id in reason else f" (key {key_id})"
        super().__init__(f"cannot decrypt token cache {path}: {reason}{named}")

    def __reduce__(
        self,
    ) -> tuple[type[DecryptionError], tuple[str, str | None, str | None, str]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.path, self.key_id, self.expected_key_id, self.reason))

    def at(self, path: str) -> DecryptionError:
        """The same error, naming ``path`` (codecs do not know where their bytes live)."""
        return type(self)(path, self.key_id, self.expected_key_id, self.reason)


class KeyUnavailableError(MsalPersistError, RuntimeError):
    """The encryption key cannot be had from where it was asked for.

    Never a silent fallback to plaintext: the message names what was tried and the ways
    out, and never holds a byte of a key.

    Attributes:
        source: Where the key was looked for (``"keyring ..."``, ``"environment variable
            ..."``, ``"file ..."``).
        reason: Why it could not be had, and what to do.
    """

    def __init__(self, source: str, reason: str) -> None:
        """Describe a key that could not be had."""
        self.source = source
        self.reason = reason
        super().__init__(f"no encryption key from {source}: {reason}")

    def __reduce__(self) -> tuple[type[KeyUnavailableError], tuple[str, str]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.source, self.reason))


class StoreUnavailableError(MsalPersistError, ConnectionError):
    """A store on a server (Redis) cannot be reached, or refused or timed out a command.

    Nothing was written by the operation that failed. The store reconnects on the next call.

    Attributes:
        store: The store, as its ``display_name`` shows it (never a password).
        operation: What was attempted, for example ``"read"`` or ``"write"``.
        reason: Why it failed, in words.
    """

    def __init__(self, store: str, operation: str, reason: str) -> None:
        """Describe a failed call to the store's server."""
        super().__init__(f"cannot {operation} token cache {store}: {reason}")
        self.store = store
        self.operation = operation
        self.reason = reason

    def __str__(self) -> str:
        """Return the message (ConnectionError would format its arguments instead)."""
        return f"cannot {self.operation} token cache {self.store}: {self.reason}"

    def __reduce__(self) -> tuple[type[StoreUnavailableError], tuple[str, str, str]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.store, self.operation, self.reason))


class LeaseExpiredError(MsalPersistError, TimeoutError):
    """The store's lock lease ran out before the write: the write was refused, not done.

    A lock held on a server is a lease, so that a holder that died cannot block everyone;
    once it expires another writer may hold the lock. The write is fenced: it succeeds only
    while the lock is still ours, so nothing was written and no other writer's update is
    lost. Retry the operation, or give the store a longer lease.

    Attributes:
        store: The store, as its ``display_name`` shows it.
        lease: The lease, in seconds.
    """

    def __init__(self, store: str, lease: float) -> None:
        """Describe a write refused because the lock's lease had expired."""
        self.store = store
        self.lease = lease
        super().__init__(
            f"lost the lock on {store}: its {lease:g} s lease expired before the write, "
            "so nothing was written",
        )

    def __reduce__(self) -> tuple[type[LeaseExpiredError], tuple[str, float]]:
        """Rebuild from the attributes, not from the formatted message."""
        return (type(self), (self.store, self.lease))
