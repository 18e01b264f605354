"""A process-safe, crash-safe, fast persistent token cache for MSAL for Python.

Pass :class:`PersistedTokenCache` to ``msal.PublicClientApplication`` or
``msal.ConfidentialClientApplication`` as ``token_cache=``; every process using the same file
shares sign-ins, and none ever loses or corrupts another's tokens.

The public names are below; every module whose name starts with ``_`` is private and may
change without notice.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from ._codec import Codec, JsonCodec
from ._encryption import EncryptedCodec
from ._errors import (
    CacheFileError,
    CacheLocationError,
    DecryptionError,
    KeyUnavailableError,
    LeaseExpiredError,
    LockTimeoutError,
    MsalPersistError,
    StoreUnavailableError,
)
from ._file_store import FileStore
from ._keys import EnvironmentKey, FileKey, KeyringKey, KeySource, RawKey
from ._locations import CacheLocation, default_cache_path
from ._lock import CrossProcessLock
from ._refresh import coordinate_refreshes
from ._store import Store
from ._token_cache import PersistedTokenCache

if TYPE_CHECKING:
    from ._redis_store import RedisPartitions, RedisStore

__version__ = version("msal-persist")

__all__ = [
    "CacheFileError",
    "CacheLocation",
    "CacheLocationError",
    "Codec",
    "CrossProcessLock",
    "DecryptionError",
    "EncryptedCodec",
    "EnvironmentKey",
    "FileKey",
    "FileStore",
    "JsonCodec",
    "KeySource",
    "KeyUnavailableError",
    "KeyringKey",
    "LeaseExpiredError",
    "LockTimeoutError",
    "MsalPersistError",
    "PersistedTokenCache",
    "RawKey",
    "RedisPartitions",
    "RedisStore",
    "Store",
    "StoreUnavailableError",
    "__version__",
    "coordinate_refreshes",
    "default_cache_path",
]

_NEEDS_REDIS = frozenset({"RedisPartitions", "RedisStore"})


def __getattr__(name: str) -> Any:
    # The Redis store imports redis-py, an optional extra: only when it is asked for.
    if name in _NEEDS_REDIS:
        from . import _redis_store  # noqa: PLC0415

        return getattr(_redis_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
