"""A process-safe, crash-safe, fast persistent token cache for MSAL for Python.

Pass :class:`PersistedTokenCache` to ``msal.PublicClientApplication`` or
``msal.ConfidentialClientApplication`` as ``token_cache=``; every process using the same file
shares sign-ins, and none ever loses or corrupts another's tokens.
"""

from __future__ import annotations

from ._errors import CacheFileError, CacheLocationError, LockTimeoutError, MsalPersistError
from ._locations import ENV_VAR, CacheLocation, default_cache_path
from ._lock import DEFAULT_LOCK_TIMEOUT, CrossProcessLock
from ._persistence import FilePersistence, Fingerprint, Snapshot
from ._token_cache import LOCK_FILE_SUFFIX, PersistedTokenCache

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "ENV_VAR",
    "LOCK_FILE_SUFFIX",
    "CacheFileError",
    "CacheLocation",
    "CacheLocationError",
    "CrossProcessLock",
    "FilePersistence",
    "Fingerprint",
    "LockTimeoutError",
    "MsalPersistError",
    "PersistedTokenCache",
    "Snapshot",
    "__version__",
    "default_cache_path",
]
