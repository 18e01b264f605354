"""azure-identity, unchanged, on the cache file msal-persist writes (and the other way round).

``SharedTokenCacheCredential`` reads the developer's shared cache,
``~/.IdentityService/msal.cache.nocae`` on Linux (plaintext, since no libsecret is present),
through msal-extensions. It trusts only *family* (FOCI) refresh tokens, which Entra ID
issues to Microsoft's first-party apps: here ``LocalAuthority`` issues them to Azure CLI's
client id, as Entra ID does. azure-identity's HTTP goes to ``LocalAuthority`` through an
azure-core transport (``tests/workers/azure_identity.py``); nothing else is changed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import azure.identity  # noqa: F401 - fail, never skip, when it is missing
import pytest
from interop_helpers import Measure

from msal_persist import PersistedTokenCache
from msal_persist.testing import (
    AZURE_CLI_CLIENT_ID,
    AZURE_POWERSHELL_CLIENT_ID,
    DEFAULT_SCOPES,
    LocalAuthority,
)
from process_helpers import run_workers, worker

SCOPE = "User.Read"


@pytest.fixture
def shared_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """azure-identity's plaintext shared cache, in a home directory of this test's own."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    return home / ".IdentityService" / "msal.cache.nocae"


def _sign_in(path: Path, username: str, *, lifetime: int = 3600) -> dict[str, Any]:
    authority = LocalAuthority(username=username, access_token_lifetime=lifetime)
    app = authority.public_client(PersistedTokenCache(path), client_id=AZURE_CLI_CLIENT_ID)
    return authority.sign_in(app, username)


def _azure_identity(*args: str) -> dict[str, Any]:
    (out,) = run_workers([worker("azure_identity", *args)])
    return json.loads(out)


def test_shared_token_cache_credential_returns_the_token_msal_persist_stored(
    shared_cache: Path,
) -> None:
    stored = _sign_in(shared_cache, "ada@example.test")
    report = _azure_identity("get_token", "ada@example.test", SCOPE)
    assert report == {"token": stored["access_token"], "hits": 0}


def test_shared_token_cache_credential_refreshes_with_msal_persists_refresh_token(
    shared_cache: Path,
) -> None:
    """An expired token: azure-identity redeems the family refresh token msal-persist kept."""
    _sign_in(shared_cache, "ada@example.test", lifetime=60)
    report = _azure_identity("get_token", "ada@example.test", SCOPE)
    assert report["hits"] == 1


def test_msal_persist_reads_what_azure_identity_wrote(shared_cache: Path) -> None:
    """azure-identity writes through msal-extensions; msal-persist reads it, and refreshes."""
    _sign_in(shared_cache, "ada@example.test", lifetime=60)
    written = _azure_identity("get_token", "ada@example.test", SCOPE)["token"]
    cache = PersistedTokenCache(shared_cache)
    secrets = {entry["secret"] for entry in cache.search("AccessToken")}
    assert written in secrets  # the token azure-identity stored, read by msal-persist
    # Another family app on msal-persist uses the refresh token azure-identity left.
    authority = LocalAuthority()
    app = authority.public_client(cache, client_id=AZURE_POWERSHELL_CLIENT_ID)
    (account,) = app.get_accounts()
    result = app.acquire_token_silent(DEFAULT_SCOPES, account)
    assert result is not None
    assert "access_token" in result
    assert authority.hits_by_grant == {"refresh_token": 1}


def test_azure_identity_and_msal_persist_at_once_lose_nothing_of_msal_persists(
    tmp_path: Path, shared_cache: Path, measure: Measure
) -> None:
    """3 azure-identity and 3 msal-persist processes refresh 10 times each on one file."""
    rounds, each = 10, 3
    users = {f"az{i}@example.test": "azure-identity" for i in range(each)}
    users |= {f"mp{i}@example.test": "msal-persist" for i in range(each)}
    for username, kind in users.items():
        if kind == "azure-identity":  # it only uses a sign-in it finds; msal-persist signs in
            _sign_in(shared_cache, username, lifetime=60)
    barrier = str(tmp_path / "barrier")
    commands = [
        worker("azure_identity", "refresher", user, SCOPE, str(rounds), barrier, str(len(users)))
        if kind == "azure-identity"
        else worker(
            "cache", "refresher", str(shared_cache), user, str(rounds), barrier, str(len(users))
        )
        for user, kind in users.items()
    ]
    reports = [json.loads(out) for out in run_workers(commands, timeout=110)]
    document = json.loads(shared_cache.read_bytes())
    accounts = {entry["username"] for entry in document["Account"].values()}
    assert accounts == set(users)
    refresh_tokens = {entry["secret"] for entry in document["RefreshToken"].values()}
    persisted = [r for r in reports if "last_refresh_token" in r]
    assert len(persisted) == each
    for report in persisted:
        assert report["last_refresh_token"] in refresh_tokens  # no msal-persist update lost
    az_hits = sum(r["hits"] for r in reports if "hits" in r)
    measure("azure-identity refreshes", az_hits)
    assert az_hits == each * rounds  # every azure-identity call refreshed and succeeded
