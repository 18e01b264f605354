"""An encrypted cache whose key the application supplies (a container, CI, a server).

In production the key comes from a secret manager or a mounted secret: set
``MSAL_PERSIST_KEY`` (``msal-persist new-key`` prints one) and use ``"env:MSAL_PERSIST_KEY"``,
or ``"file:/run/secrets/msal-key"``, or ``KeyringKey()`` where an OS keyring runs.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from msal_persist import DecryptionError, PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

# For this demonstration only: a fresh random key.
os.environ.setdefault("MSAL_PERSIST_KEY", base64.b64encode(os.urandom(32)).decode())

authority = LocalAuthority(username="ada@example.test")
first = authority.public_client(PersistedTokenCache(encryption="env:MSAL_PERSIST_KEY"))
authority.sign_in(first)

second = authority.public_client(PersistedTokenCache(encryption="env:MSAL_PERSIST_KEY"))
result = second.acquire_token_silent(DEFAULT_SCOPES, second.get_accounts()[0])
assert result is not None
print(f"second app: token from {result['token_source']}")

data = Path(PersistedTokenCache().path).read_bytes()
print(
    f"on disk: {len(data)} bytes, starting {data[:4]!r}, no username in clear: {b'ada' not in data}"
)
try:
    authority.public_client(PersistedTokenCache()).get_accounts()  # no key
except DecryptionError as error:
    print(f"without the key: {type(error).__name__}, the file left as it is")
