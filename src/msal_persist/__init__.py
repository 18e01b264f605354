"""A process-safe, crash-safe, fast persistent token cache for MSAL for Python.

Pass :class:`PersistedTokenCache` to ``msal.PublicClientApplication`` or
``msal.ConfidentialClientApplication`` as ``token_cache=``; every process using the same file
shares sign-ins, and none ever loses or corrupts another's tokens.

The public names are below; every module whose name starts with ``_`` is private and may
change without notice.
"""

from __future__ import annotations

from importlib.metadata import version

from ._codec import Codec, JsonCodec
from ._errors import CacheFileError, CacheLocationError, LockTimeoutError, MsalPersistError
from ._file_store import FileStore
from ._locations import CacheLocation, default_cache_path
from ._lock import CrossProcessLock
from ._refresh import coordinate_refreshes
from ._store import Store
from ._token_cache import PersistedTokenCache

__version__ = version("msal-persist")

__all__ = [
    "CacheFileError",
    "CacheLocation",
    "CacheLocationError",
    "Codec",
    "CrossProcessLock",
    "FileStore",
    "JsonCodec",
    "LockTimeoutError",
    "MsalPersistError",
    "PersistedTokenCache",
    "Store",
    "__version__",
    "coordinate_refreshes",
    "default_cache_path",
]
