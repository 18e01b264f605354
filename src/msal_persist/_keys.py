"""Where an encryption key comes from: the OS keyring, or the application.

A *key source* hands the encrypting codec one 256-bit key. It is asked once per process
(again only when the cache turns out to be encrypted under another key and the source can
have changed: a rotated keyring item or a remounted secret file), and the key is kept in
memory only. No key byte reaches a log line, a ``repr``, an exception message or a file.

- :class:`KeyringKey`: the OS keyring through ``keyring`` (Secret Service over D-Bus on
  Linux, with no PyGObject; Keychain on macOS; Credential Locker on Windows). A random key
  is created on the first write and stored as one small item: only the 32-byte key goes
  into the keyring, never the cache.
- :class:`EnvironmentKey`, :class:`FileKey`, :class:`RawKey`: a key the application
  supplies, for servers, CI and containers without a keyring (a file may be a mounted
  Kubernetes secret).

Keys are written as text in base64 (standard or URL-safe, padded or not) or as 64 hex
digits; a file may also hold the 32 raw bytes. ``msal-persist new-key`` prints a fresh one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Final, Protocol

from ._envelope import KEY_ID_SIZE
from ._errors import KeyUnavailableError
from ._files import NotRegularFileError, open_regular
from ._text import printable

__all__ = [
    "DEFAULT_KEYRING_NAME",
    "DEFAULT_KEYRING_SERVICE",
    "KEY_SIZE",
    "EnvironmentKey",
    "FileKey",
    "KeySource",
    "KeyringKey",
    "RawKey",
    "key_id_of",
    "key_source",
    "new_key_text",
]

KEY_SIZE: Final = 32
DEFAULT_KEYRING_SERVICE: Final = "msal-persist"
DEFAULT_KEYRING_NAME: Final = "token-cache-key"
_KEY_FILE_LIMIT: Final = 4096
"""A key file is a few dozen bytes; refuse to read a large file someone put there."""

_WAYS_OUT: Final = (
    "start a Secret Service (for example gnome-keyring-daemon on a D-Bus session), or give "
    "the key yourself: EnvironmentKey(...), FileKey(...) or RawKey(...) (CLI: --key env:VAR "
    "or --key file:PATH)"
)


class KeySource(Protocol):
    """Hands the encrypting codec its 256-bit key."""

    @property
    def description(self) -> str:
        """Where the key is looked for, for errors and ``doctor`` (never the key)."""
        ...

    @property
    def reloadable(self) -> bool:
        """Whether asking again may give another key (the keyring, a file)."""
        ...

    def fetch(self, *, create: bool, again: bool = False) -> bytes | None:
        """Return the key; ``None`` if the source has none yet and ``create`` is false.

        With ``create``, a source that can make a key (the keyring) makes and keeps one.
        A source may remember a key for the life of the process; ``again`` asks it to look
        once more (the cache turned out to be sealed under another key).

        Raises:
            KeyUnavailableError: The source cannot be used, or holds no valid key.
        """
        ...


def key_id_of(key: bytes) -> bytes:
    """The public id of ``key``: 8 bytes of an HMAC keyed by it, which reveal nothing of it."""
    return hmac.new(key, b"msal-persist key id", hashlib.sha256).digest()[:KEY_ID_SIZE]


def new_key_text() -> str:
    """A fresh random key as base64 text (what ``msal-persist new-key`` prints)."""
    return base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()


def _key_from_text(text: str, source: str) -> bytes:
    """Read a key written as base64 (either alphabet, padding optional) or as hex."""
    text = text.strip()
    if len(text) == 2 * KEY_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    normal = text.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_SIZE:
        # Say what is wrong without saying what is there: the text may be a key.
        raise KeyUnavailableError(
            source,
            f"it does not hold a {KEY_SIZE}-byte key in base64 or hex ({len(text)} characters); "
            "make one with: msal-persist new-key",
        )
    return key


def _check_key(key: object, source: str) -> bytes:
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_SIZE:
        raise KeyUnavailableError(source, f"a key is {KEY_SIZE} bytes (bytes, not text)")
    return bytes(key)


class _Unpicklable:
    """Key sources holding key bytes refuse to be pickled: a pickle is a file with the key."""

    __slots__ = ()

    def __reduce__(self) -> Any:
        """Refuse: pickling would write the key out."""
        raise TypeError(f"{type(self).__name__} holds a key and cannot be pickled")


class RawKey(_Unpicklable):
    """A key the application holds in memory (32 bytes).

    Args:
        key: The 32-byte key.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Keep ``key`` (copied)."""
        self._key = _check_key(key, "RawKey")

    def __repr__(self) -> str:
        """Name the key by its id only."""
        return f"RawKey(key_id={key_id_of(self._key).hex()!r})"

    @property
    def description(self) -> str:
        """``"a key given by the application"``."""
        return "a key given by the application"

    @property
    def reloadable(self) -> bool:
        """False, since it is this very key."""
        return False

    def fetch(self, *, create: bool, again: bool = False) -> bytes:  # noqa: ARG002 - protocol
        """Return the key."""
        return self._key


class EnvironmentKey:
    """A key in an environment variable (base64 or hex).

    Args:
        variable: The variable's name.
    """

    __slots__ = ("variable",)

    def __init__(self, variable: str = "MSAL_PERSIST_KEY") -> None:
        """Read the key from ``variable`` when first needed."""
        if not variable or "=" in variable or "\0" in variable:
            raise ValueError(f"not an environment variable name: {variable!r}")
        self.variable: Final = variable

    def __repr__(self) -> str:
        """Name the variable, never its value."""
        return f"EnvironmentKey({self.variable!r})"

    @property
    def description(self) -> str:
        """The variable."""
        return f"environment variable {printable(self.variable)}"

    @property
    def reloadable(self) -> bool:
        """False, since a process's environment does not change under it."""
        return False

    def fetch(self, *, create: bool, again: bool = False) -> bytes:  # noqa: ARG002 - protocol
        """Read and check the key.

        Raises:
            KeyUnavailableError: The variable is unset or holds no 32-byte key.
        """
        text = os.environ.get(self.variable)
        if not text:
            raise KeyUnavailableError(
                self.description, "it is not set; make a key with: msal-persist new-key"
            )
        return _key_from_text(text, self.description)


class FileKey:
    """A key in a file: a mounted secret, say (base64, hex, or the 32 raw bytes).

    Args:
        path: The file (``~`` expanded).
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Read the key from ``path`` when first needed, and again if the cache's key changed."""
        self.path: Final = Path(path).expanduser()

    def __repr__(self) -> str:
        """Name the file."""
        return f"FileKey({str(self.path)!r})"

    @property
    def description(self) -> str:
        """The file."""
        return f"file {printable(self.path)}"

    @property
    def reloadable(self) -> bool:
        """True, since a mounted secret is replaced when it is rotated."""
        return True

    def fetch(self, *, create: bool, again: bool = False) -> bytes:  # noqa: ARG002 - protocol
        """Read and check the key.

        Raises:
            KeyUnavailableError: The file cannot be read, or holds no 32-byte key.
        """
        try:
            # Mounted secrets are symlinks into a versioned directory: follow them here.
            fd, _ = open_regular(os.path.realpath(self.path), os.O_RDONLY)
            try:
                data = os.read(fd, _KEY_FILE_LIMIT + 1)
            finally:
                os.close(fd)
        except NotRegularFileError as error:
            raise KeyUnavailableError(self.description, f"it is {error.kind}") from None
        except OSError as error:
            raise KeyUnavailableError(
                self.description, error.strerror or type(error).__name__
            ) from None
        if len(data) == KEY_SIZE and not _looks_like_text(data):
            return data
        if len(data) > _KEY_FILE_LIMIT:
            raise KeyUnavailableError(self.description, "it is far too large for a key")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        return _key_from_text(text, self.description)


def _looks_like_text(data: bytes) -> bool:
    # 32 raw random bytes are ASCII base64 characters by chance once in ~2^32 tries.
    return data.isascii() and data.strip().isalnum()


class KeyringKey:
    """A key in the OS keyring, created at random on the first write.

    Args:
        service: The keyring service the item is stored under.
        name: The item's name (keyring's "username") within ``service``. Give each key its
            own name; to rotate, re-encrypt under a new name
            (:meth:`~msal_persist.PersistedTokenCache.reencrypt`).
        backend: A ``keyring`` backend to use instead of the one ``keyring`` chooses.

    Raises:
        KeyUnavailableError: ``keyring`` finds no usable backend (none at all, or only one
            that keeps secrets unencrypted in a file). The message names what it found.
        ImportError: The ``encryption`` extra is not installed.
    """

    __slots__ = ("_backend", "_created", "name", "service")

    def __init__(
        self,
        service: str = DEFAULT_KEYRING_SERVICE,
        name: str = DEFAULT_KEYRING_NAME,
        *,
        backend: Any = None,
    ) -> None:
        """Choose the backend now, so that a missing keyring fails here and not at a write."""
        self.service: Final = service
        self.name: Final = name
        self._backend = _usable_backend(self.description) if backend is None else backend
        self._created = threading.Lock()

    def __repr__(self) -> str:
        """Name the item and the backend."""
        return f"KeyringKey(service={self.service!r}, name={self.name!r})"

    @property
    def description(self) -> str:
        """The item and the backend, as ``doctor`` and errors name them."""
        backend = getattr(self, "_backend", None)
        chosen = "" if backend is None else f" ({_backend_name(backend)})"
        return f"keyring item {printable(self.service)}/{printable(self.name)}{chosen}"

    @property
    def reloadable(self) -> bool:
        """True, since another process may have stored a key since."""
        return True

    def fetch(self, *, create: bool, again: bool = False) -> bytes | None:
        """Read the key; with ``create``, make and store one if there is none.

        A key read (or made) once is remembered for the life of the process, by every
        ``KeyringKey`` naming the same item of the same backend: the keyring is asked once
        per process, not once per cache, unless ``again`` is true.

        The encrypting codec creates keys only while writing, that is inside the store's
        write section: two processes writing one cache for the first time cannot both
        create one.

        Raises:
            KeyUnavailableError: The keyring is locked or refuses, or its item holds no
                32-byte key (it is never overwritten).
        """
        item = (self._backend, self.service, self.name)
        with _REMEMBERED_LOCK:
            remembered = None if again else _REMEMBERED.get(item)
            if remembered is not None:
                return remembered
            key = self._read_or_make(create=create)
            if key is not None:
                _REMEMBERED[item] = key
            return key

    def _read_or_make(self, *, create: bool) -> bytes | None:
        with self._created:
            text = self._call("read", self._backend.get_password, self.service, self.name)
            if text is None:
                if not create:
                    return None
                fresh = new_key_text()
                self._call("store", self._backend.set_password, self.service, self.name, fresh)
                # Read back what the keyring holds: if another writer of another cache
                # stored a key under the same name meanwhile, both use the one that stayed.
                text = self._call("read", self._backend.get_password, self.service, self.name)
                if text is None:
                    raise KeyUnavailableError(self.description, "the keyring lost the new key")
            return _key_from_text(text, self.description)

    def _call(self, what: str, method: Any, *args: str) -> Any:
        try:
            return method(*args)
        except Exception as error:  # noqa: BLE001 - keyring, secretstorage, jeepney: many types
            # The type and the words of a read error; only the type for a store, whose
            # arguments hold the key.
            detail = f": {printable(str(error))}" if what == "read" and str(error) else ""
            raise KeyUnavailableError(
                self.description,
                f"the keyring refused to {what} the key ({type(error).__name__}{detail}); "
                f"{_WAYS_OUT}",
            ) from None


_REMEMBERED: dict[tuple[Any, str, str], bytes] = {}
"""Keys read from a keyring in this process, by (backend, service, name); memory only."""
_REMEMBERED_LOCK: Final = threading.Lock()


def _backend_name(backend: object) -> str:
    kind = type(backend)
    return f"{kind.__module__}.{kind.__qualname__}"


def _usable_backend(description: str) -> Any:
    try:
        import keyring  # noqa: PLC0415 - optional: the "encryption" extra
    except ImportError as error:
        raise ImportError(
            "KeyringKey needs the keyring package: pip install 'msal-persist[encryption]'"
        ) from error
    backend = keyring.get_keyring()
    # The chainer, chosen when several backends qualify, lists them; any other stands alone.
    backends = list(getattr(backend, "backends", None) or [backend])
    if not any(_priority(b) >= 1 for b in backends):
        found = ", ".join(_backend_name(b) for b in backends) or _backend_name(backend)
        raise KeyUnavailableError(
            description,
            f"keyring found no usable backend (found: {found}; none that keeps secrets "
            f"encrypted); {_WAYS_OUT}",
        )
    return backend


def _priority(backend: object) -> float:
    try:
        return float(getattr(backend, "priority", 0))
    except Exception:  # noqa: BLE001 - a backend's priority probe may raise anything
        return 0.0


def key_source(spec: str) -> KeySource:
    """Make a key source from its text form (the CLI's ``--key`` and configuration files).

    ``keyring`` or ``keyring:NAME`` (service ``msal-persist``), ``env:VARIABLE``,
    ``file:PATH``. A key itself is never accepted as text here: command lines are visible
    to every user of the machine.

    Raises:
        ValueError: ``spec`` is none of these.
        KeyUnavailableError: ``keyring`` finds no usable backend.
    """
    kind, _, rest = spec.partition(":")
    if kind == "keyring":
        return KeyringKey(name=rest or DEFAULT_KEYRING_NAME)
    if kind == "env" and rest:
        return EnvironmentKey(rest)
    if kind == "file" and rest:
        return FileKey(rest)
    raise ValueError(
        f"not a key source: {printable(spec)!r} (use keyring, keyring:NAME, env:VARIABLE "
        "or file:PATH)"
    )
