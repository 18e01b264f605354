"""PersistedTokenCache.remove_accounts: every entry of some accounts, every client id, one write."""

from __future__ import annotations

import json
from pathlib import Path

from msal_persist import PersistedTokenCache
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

OTHER_CLIENT_ID = "11111111-1111-4111-8111-111111111111"
ADA = "ada@example.test"
GRACE = "grace@example.test"


def _sign_in(path: Path, username: str, client_id: str | None = None) -> None:
    authority = LocalAuthority()
    options = {} if client_id is None else {"client_id": client_id}
    app = authority.public_client(token_cache=PersistedTokenCache(path), **options)
    authority.sign_in(app, username)


def _home_ids(document: dict, section: str) -> set[str]:
    return {entry["home_account_id"] for entry in document[section].values()}


def test_removes_every_entry_of_an_account_for_every_client_id_in_one_write(
    cache_path: Path,
) -> None:
    """Ada's entries of two apps go in one write; Grace, app metadata and peers' data stay."""
    _sign_in(cache_path, ADA)
    _sign_in(cache_path, ADA, OTHER_CLIENT_ID)
    _sign_in(cache_path, GRACE)
    document = json.loads(cache_path.read_bytes())
    document["ForeignSection"] = {"k": {"v": 1}}
    cache_path.write_text(json.dumps(document))
    ada = LocalAuthority().home_account_id(ADA)
    cache = PersistedTokenCache(cache_path)
    removed = cache.remove_accounts([ada.upper()])  # compared case-insensitively
    assert removed == {"Account": 1, "AccessToken": 2, "RefreshToken": 2, "IdToken": 2}
    assert list(removed) == ["Account", "AccessToken", "RefreshToken", "IdToken"]
    assert cache.store.saves == 1
    after = json.loads(cache_path.read_bytes())
    for section in ("Account", "AccessToken", "RefreshToken", "IdToken"):
        assert ada not in _home_ids(after, section)
        assert _home_ids(after, section)
    assert after["AppMetadata"] == document["AppMetadata"]
    assert after["ForeignSection"] == {"k": {"v": 1}}
    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(cache_path))
    (account,) = app.get_accounts()
    assert account["username"] == GRACE
    assert app.acquire_token_silent(DEFAULT_SCOPES, account)["token_source"] == "cache"


def test_removes_from_the_newest_content(cache_path: Path) -> None:
    """An instance that loaded before another process signed Grace in still removes her."""
    _sign_in(cache_path, ADA)
    cache = PersistedTokenCache(cache_path)
    assert cache.serialize()  # loaded now, before Grace signs in elsewhere
    _sign_in(cache_path, GRACE)
    removed = cache.remove_accounts([LocalAuthority().home_account_id(GRACE)])
    assert removed["Account"] == 1
    after = json.loads(cache_path.read_bytes())
    assert {entry["username"] for entry in after["Account"].values()} == {ADA}


def test_inside_a_transaction_it_joins_the_single_write(cache_path: Path) -> None:
    """Two removals in one transaction are one lock and one write."""
    _sign_in(cache_path, ADA)
    _sign_in(cache_path, GRACE)
    cache = PersistedTokenCache(cache_path)
    authority = LocalAuthority()
    with cache.transaction():
        cache.remove_accounts([authority.home_account_id(ADA)])
        cache.remove_accounts([authority.home_account_id(GRACE)])
    assert cache.store.saves == 1
    assert cache.store.lock.acquisitions == 1
    assert json.loads(cache_path.read_bytes())["Account"] == {}


def test_no_match_writes_nothing_and_creates_no_file(cache_path: Path) -> None:
    """Removing an account nobody has writes nothing, on an existing or a missing file."""
    cache = PersistedTokenCache(cache_path)
    assert set(cache.remove_accounts(["nobody"]).values()) == {0}
    assert not cache_path.exists()
    _sign_in(cache_path, ADA)
    before = cache_path.read_bytes()
    cache = PersistedTokenCache(cache_path)
    assert set(cache.remove_accounts(["nobody"]).values()) == {0}
    assert cache.store.saves == 0
    assert cache_path.read_bytes() == before
