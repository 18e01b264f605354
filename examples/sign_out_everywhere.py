"""Remove an account in one write, and clear the cache for every process at once."""

from __future__ import annotations

from msal_persist import PersistedTokenCache
from msal_persist.testing import LocalAuthority

cache = PersistedTokenCache()
authority = LocalAuthority()
app = authority.public_client(token_cache=cache)
for user in ("ada@example.test", "grace@example.test"):
    authority.sign_in(app, user)

# msal's remove_account() changes several entries; one transaction makes it one lock and
# one write, so no other process ever sees the account half removed.
writes = cache.store.saves
with cache.transaction():
    app.remove_account(app.get_accounts(username="ada@example.test")[0])
assert cache.store.saves == writes + 1
print("left:", [a["username"] for a in app.get_accounts()])

# clear() deletes the file under the lock: every process sharing it reads an empty cache
# from its next call on, and none can write the old tokens back.
cache.clear()
assert app.get_accounts() == []
print("cleared", cache.path)
