"""Two "processes" (here: two application objects) share sign-ins through one cache file.

Runs offline against msal_persist.testing's local authority. In a real application pass
``authority="https://login.microsoftonline.com/<tenant>"`` and your client id instead.
"""

from __future__ import annotations

from msal_persist import PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

authority = LocalAuthority(username="ada@example.test")

# The first application signs in interactively (here: the stand-in's authorization code flow).
first = authority.public_client(token_cache=PersistedTokenCache())
authority.sign_in(first)

# Another application, with its own cache object on the same default file, gets a token
# silently: no second sign-in, no request to the token endpoint.
authority.reset_counters()
second = authority.public_client(token_cache=PersistedTokenCache())
(account,) = second.get_accounts()
result = second.acquire_token_silent(DEFAULT_SCOPES, account)
assert result is not None
assert result["token_source"] == "cache"
assert authority.token_endpoint_hits == 0
print(f"{account['username']} signed in once; the second app used {second.token_cache.path}")
