"""One file format for all: msal-persist keeps what others wrote, others read what it writes."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msal
import msal_extensions
import pytest
from interop_helpers import STANDARD_SECTIONS, Measure, read_document

from msal_persist import PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

ADA, BOB, CAROL, DAVE, ERIN = (
    f"{name}@example.test" for name in ("ada", "bob", "carol", "dave", "erin")
)
# Another application's entries, as MSAL.NET (here: Azure CLI's client id) writes them.
FOREIGN_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
FOREIGN_HOME = "6f1c7d1a-5b1e-4c7e-9a53-2d6e6d0c0f00.72f988bf-86f1-41af-91ab-2d7cd011db47"
FOREIGN_REALM = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENVIRONMENT = "login.microsoftonline.com"
# Values msal derives from the token response or the clock: they differ between two runs of
# the same operation, so only their presence is compared with plain msal's result.
VOLATILE = frozenset(
    {"secret", "cached_at", "expires_on", "extended_expires_on", "last_modification_time"}
)


def add_other_sdks_content(document: dict[str, Any]) -> None:
    """Add what other SDKs store and msal Python does not know: sections, fields, FOCI RTs."""
    far = str(int(time.time()) + 10 * 365 * 24 * 3600)
    for section in STANDARD_SECTIONS & set(document):
        for entry in document[section].values():
            entry["ext_field"] = {"written_by": "another sdk", "n": [1, 2.5, None, True]}
    document["AppMetadataExtra"] = {
        "appmetadataextra-login.microsoftonline.com-sdk": {"sdk": "msal-node", "v": "2.16.2"}
    }
    document.setdefault("Account", {})[f"{FOREIGN_HOME}-{ENVIRONMENT}-{FOREIGN_REALM}"] = {
        "home_account_id": FOREIGN_HOME,
        "environment": ENVIRONMENT,
        "realm": FOREIGN_REALM,
        "local_account_id": FOREIGN_HOME.partition(".")[0],
        "username": "grace@contoso.example",
        "authority_type": "MSSTS",
        "client_info": "eyJ1aWQiOiI2ZjFjIiwidXRpZCI6IjcyZjkifQ",
        "name": "Grace",
    }
    document.setdefault("RefreshToken", {})[f"{FOREIGN_HOME}-{ENVIRONMENT}-refreshtoken-1--"] = {
        "home_account_id": FOREIGN_HOME,
        "environment": ENVIRONMENT,
        "client_id": FOREIGN_CLIENT_ID,
        "secret": "foreign-family-refresh-token",
        "credential_type": "RefreshToken",
        "family_id": "1",
        "last_modification_time": "1700000000",
        "ext_field": "msal.net",
    }
    document.setdefault("AccessToken", {})[
        f"{FOREIGN_HOME}-{ENVIRONMENT}-accesstoken-{FOREIGN_CLIENT_ID}-{FOREIGN_REALM}-"
        "https://management.core.windows.net//user_impersonation"
    ] = {
        "home_account_id": FOREIGN_HOME,
        "environment": ENVIRONMENT,
        "client_id": FOREIGN_CLIENT_ID,
        "secret": "foreign-access-token",
        "credential_type": "AccessToken",
        "realm": FOREIGN_REALM,
        "target": "https://management.core.windows.net//user_impersonation",
        "cached_at": "1700000000",
        "expires_on": far,
        "extended_expires_on": far,
        "ext_expires_on": far,
        "token_type": "Bearer",
        "refresh_on": far,
    }
    document.setdefault("AppMetadata", {})[f"appmetadata-{ENVIRONMENT}-{FOREIGN_CLIENT_ID}"] = {
        "client_id": FOREIGN_CLIENT_ID,
        "environment": ENVIRONMENT,
        "family_id": "1",
    }


def account_of(app: msal.ClientApplication, username: str) -> dict[str, Any]:
    """The account of ``username`` among the app's accounts."""
    (account,) = (a for a in app.get_accounts() if a["username"] == username)
    return account


def sign_in_bob_and_refresh_ada(authority: LocalAuthority, app: msal.ClientApplication) -> None:
    """The update under test: a new sign-in, and a forced refresh of an existing account."""
    authority.sign_in(app, username=BOB)
    result = app.acquire_token_silent(DEFAULT_SCOPES, account_of(app, ADA), force_refresh=True)
    assert result is not None
    assert "access_token" in result


def compare_with_plain_msal(
    before: dict[str, Any], after: dict[str, Any], expected: dict[str, Any]
) -> list[str]:
    """Check ``after`` keeps all of ``before`` that plain msal keeps, and adds only what it adds.

    ``expected`` is plain msal's result of the same operation on ``before``. Returns the
    entries (``section/key``) that msal itself rewrote, which therefore changed.
    """
    assert set(after) == set(expected)
    for name in set(before) - STANDARD_SECTIONS:
        assert after[name] == before[name], f"section {name} changed"
    rewritten = []
    for section in STANDARD_SECTIONS & set(expected):
        assert set(after[section]) == set(expected[section]), section
        for key, entry in after[section].items():
            reference = expected[section][key]
            assert set(entry) == set(reference), f"{section}/{key}: other fields than msal's"
            old = before.get(section, {}).get(key)
            if old is not None and reference == old:
                assert entry == old, f"{section}/{key} was changed"
                continue
            if old is not None:
                rewritten.append(f"{section}/{key}")
            for field, value in reference.items():
                if field not in VOLATILE:
                    assert entry[field] == value, f"{section}/{key}/{field}"
    return sorted(rewritten)


def write_with_msal_extensions(path: Path, authority: LocalAuthority) -> None:
    """Sign ada in through msal-extensions on ``path``."""
    cache = msal_extensions.PersistedTokenCache(msal_extensions.FilePersistence(str(path)))
    authority.sign_in(authority.public_client(token_cache=cache), username=ADA)


def write_with_plain_msal(path: Path, authority: LocalAuthority) -> None:
    """Sign ada in with plain msal and save ``serialize()`` (indent=4), as Azure CLI's does."""
    cache = msal.SerializableTokenCache()
    authority.sign_in(authority.public_client(token_cache=cache), username=ADA)
    path.write_text(cache.serialize())


WRITERS: dict[str, Callable[[Path, LocalAuthority], None]] = {
    "msal-extensions": write_with_msal_extensions,
    "plain-msal": write_with_plain_msal,
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_msal_persist_keeps_everything_other_writers_stored(
    writer: str, cache_path: Path, measure: Measure
) -> None:
    """Foreign sections, fields and entries survive a msal-persist sign-in and refresh."""
    authority = LocalAuthority()
    WRITERS[writer](cache_path, authority)
    document = read_document(cache_path)
    add_other_sdks_content(document)
    cache_path.write_text(json.dumps(document, indent=4))
    cache_path.chmod(0o600)
    before = copy.deepcopy(document)

    reference = msal.SerializableTokenCache()
    reference.deserialize(cache_path.read_text())
    sign_in_bob_and_refresh_ada(authority, authority.public_client(token_cache=reference))
    expected = json.loads(reference.serialize())

    cache = PersistedTokenCache(cache_path)
    sign_in_bob_and_refresh_ada(authority, authority.public_client(token_cache=cache))
    after = read_document(cache_path)

    rewritten = compare_with_plain_msal(before, after, expected)
    dropped = [key for key in rewritten if "ext_field" not in _entry(after, key)]
    measure("entries msal rewrote, exactly as plain msal does", _sections(rewritten))
    measure("of which msal (not msal-persist) dropped foreign fields", _sections(dropped))
    assert cache.store.saves == 2  # one write per token acquisition
    family_rt = f"{FOREIGN_HOME}-{ENVIRONMENT}-refreshtoken-1--"
    assert after["RefreshToken"][family_rt] == before["RefreshToken"][family_rt]
    assert after["AppMetadataExtra"] == before["AppMetadataExtra"]
    assert list(cache_path.parent.glob("*.corrupt-*")) == []


def _entry(document: dict[str, Any], key: str) -> dict[str, Any]:
    section, _, entry_key = key.partition("/")
    entry: dict[str, Any] = document[section][entry_key]
    return entry


def _sections(keys: list[str]) -> str:
    return ", ".join(key.partition("/")[0] for key in keys) or "none"


def test_peers_read_and_update_what_msal_persist_wrote(cache_path: Path, measure: Measure) -> None:
    """msal-extensions and plain msal read and update msal-persist's file; it sees their work."""
    authority = LocalAuthority()
    persisted = PersistedTokenCache(cache_path)
    persist_app = authority.public_client(token_cache=persisted)
    authority.sign_in(persist_app, username=ADA)
    written = cache_path.read_bytes()
    compact = b"\n" not in written
    measure("msal-persist document", f"{len(written)} bytes, compact JSON: {compact}")

    ext_cache = msal_extensions.PersistedTokenCache(
        msal_extensions.FilePersistence(str(cache_path))
    )
    ext_app = authority.public_client(token_cache=ext_cache)
    authority.reset_counters()
    hit = ext_app.acquire_token_silent(DEFAULT_SCOPES, account_of(ext_app, ADA))
    assert hit is not None
    assert hit["token_source"] == "cache"
    assert authority.token_endpoint_hits == 0
    authority.sign_in(ext_app, username=CAROL)
    refreshed = ext_app.acquire_token_silent(
        DEFAULT_SCOPES, account_of(ext_app, ADA), force_refresh=True
    )
    assert refreshed is not None

    # Plain msal, as its docstring recipe does: deserialize, use, write the file in place.
    plain = msal.SerializableTokenCache()
    plain.deserialize(cache_path.read_text())
    plain_app = authority.public_client(token_cache=plain)
    assert {a["username"] for a in plain_app.get_accounts()} == {ADA, CAROL}
    authority.sign_in(plain_app, username=DAVE)
    with cache_path.open("w") as handle:
        handle.write(plain.serialize())
    before = read_document(cache_path)

    for cache in (persisted, PersistedTokenCache(cache_path)):
        app = authority.public_client(token_cache=cache)
        assert {a["username"] for a in app.get_accounts()} == {ADA, CAROL, DAVE}
        rts = {e["secret"] for e in json.loads(cache.serialize())["RefreshToken"].values()}
        assert refreshed["refresh_token"] in rts
    authority.sign_in(persist_app, username=ERIN)
    after = read_document(cache_path)
    reference = msal.SerializableTokenCache()
    reference.deserialize(json.dumps(before))
    authority.sign_in(authority.public_client(token_cache=reference), username=ERIN)
    expected = json.loads(reference.serialize())
    compare_with_plain_msal(before, after, expected)
    assert {e["username"] for e in after["Account"].values()} == {ADA, CAROL, DAVE, ERIN}
