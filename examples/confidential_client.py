"""A daemon's app-only tokens (client credentials) cached once for every worker process."""

from __future__ import annotations

from msal_persist import PersistedTokenCache
from msal_persist.testing import LocalAuthority

SCOPES = ["https://graph.microsoft.com/.default"]

authority = LocalAuthority()
for worker in range(3):
    app = authority.confidential_client(token_cache=PersistedTokenCache())
    result = app.acquire_token_for_client(SCOPES)
    assert "access_token" in result, result.get("error_description")
    print(f"worker {worker}: token from {result.get('token_source')}")
assert authority.token_endpoint_hits == 1
