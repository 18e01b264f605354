"""Azure CLI peers (tests_interop/): ``python -m workers.azure_cli COMMAND ARGS...``.

Run by the Python of a separate virtual environment holding ``azure-cli-core`` (it pins
portalocker 2, msal-persist needs 3, so the two cannot share one environment, just as a
user's ``az`` lives apart from their applications). Azure CLI's own auth code runs
unchanged (``azure.cli.core.auth.identity.Identity``: its msal apps, its token cache in
``$AZURE_CONFIG_DIR/msal_token_cache.json`` through msal-extensions); the only change is
that every msal application it creates talks to ``LocalAuthority`` instead of the network.
Each command prints one JSON line.
"""

from __future__ import annotations

import json
from typing import Any

import msal
from azure.cli.core.auth.identity import Identity

from msal_persist.testing import DEFAULT_TENANT_ID, LocalAuthority
from workers import main

AUTHORITY = LocalAuthority()
_original_init = msal.ClientApplication.__init__


def _offline_init(self: msal.ClientApplication, *args: Any, **kwargs: Any) -> None:
    kwargs["http_client"] = AUTHORITY
    _original_init(self, *args, **kwargs)


msal.ClientApplication.__init__ = _offline_init  # the transport, and nothing else


def _identity() -> Identity:
    return Identity("https://login.microsoftonline.com", tenant_id=DEFAULT_TENANT_ID)


def login(username: str, scope: str) -> None:
    """``az login --username`` (the password grant): Azure CLI writes the cache."""
    result = _identity().login_with_username_password(username, "any password", [scope])
    print(json.dumps({"username": result.get("username"), "hits": AUTHORITY.token_endpoint_hits}))


def get_token(username: str, scope: str) -> None:
    """``az account get-access-token``'s token path: the user's token for ``scope``."""
    result = _identity().get_user_credential(username).acquire_token([scope])
    print(
        json.dumps(
            {
                "token": result["access_token"],
                "source": result.get("token_source"),
                "hits": AUTHORITY.token_endpoint_hits,
            }
        )
    )


COMMANDS = {"get_token": get_token, "login": login}

if __name__ == "__main__":
    main(COMMANDS)
