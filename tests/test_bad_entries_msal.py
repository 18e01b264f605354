"""Real msal on damaged caches: it raises on a bad entry, never on what decode_document keeps."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

import msal
import pytest

from msal_persist._codec import decode_document
from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

ADA = "ada@example.test"
BOB = "bob@example.test"
MISSING = object()
# Non-standard literals, spliced into the JSON text where these strings stand.
LITERALS = {'"<1e999>"': "1e999", '"<NaN>"': "NaN"}

Accounts = dict[str, dict[str, Any]]
Trigger = Callable[[msal.PublicClientApplication, Accounts], object]


def silent(username: str, **kwargs: Any) -> Trigger:
    def trigger(app: msal.PublicClientApplication, accounts: Accounts) -> object:
        return app.acquire_token_silent(DEFAULT_SCOPES, accounts[username], **kwargs)

    return trigger


def accounts_named(username: str | None) -> Trigger:
    return lambda app, _: app.get_accounts(username=username)


def remove(username: str) -> Trigger:
    return lambda app, accounts: app.remove_account(accounts[username])


# (what is damaged in Ada's entry of a section, an msal call that raises on it)
CASES: dict[str, tuple[str, dict[str, object], Trigger]] = {
    "access token expires_on 1e999": ("AccessToken", {"expires_on": "<1e999>"}, silent(BOB)),
    'access token expires_on "1e999"': ("AccessToken", {"expires_on": "1e999"}, silent(BOB)),
    "access token expires_on NaN": ("AccessToken", {"expires_on": "<NaN>"}, silent(BOB)),
    'access token expires_on "soon"': ("AccessToken", {"expires_on": "soon"}, silent(BOB)),
    "access token without expires_on": ("AccessToken", {"expires_on": MISSING}, silent(BOB)),
    "access token without secret": ("AccessToken", {"secret": MISSING}, silent(ADA)),
    "access token target a number": ("AccessToken", {"target": 42}, silent(ADA)),
    "access token refresh_on garbled": ("AccessToken", {"refresh_on": "later"}, silent(ADA)),
    "expired access token without credential_type": (
        "AccessToken",
        {"credential_type": MISSING, "expires_on": "1"},
        silent(ADA),
    ),
    "refresh token without secret": (
        "RefreshToken",
        {"secret": MISSING},
        silent(ADA, force_refresh=True),
    ),
    "refresh token of the wrong type": (
        "RefreshToken",
        {"credential_type": "AccessToken"},
        silent(ADA, force_refresh=True),
    ),
    "refresh token last_modification_time garbled": (
        "RefreshToken",
        {"last_modification_time": "yesterday"},
        silent(ADA, force_refresh=True),
    ),
    "refresh token without client_id": ("RefreshToken", {"client_id": MISSING}, remove(ADA)),
    "ID token without credential_type": ("IdToken", {"credential_type": MISSING}, remove(ADA)),
    "account without authority_type": (
        "Account",
        {"authority_type": MISSING},
        accounts_named(None),
    ),
    "account without username": ("Account", {"username": MISSING}, accounts_named(BOB)),
    "account home_account_id a list": ("Account", {"home_account_id": ["x"]}, accounts_named(None)),
}


@pytest.fixture(scope="module")
def signed_in() -> tuple[LocalAuthority, dict[str, Any], Accounts]:
    """A cache msal itself filled by signing Ada and Bob in; their accounts as msal lists them."""
    authority = LocalAuthority()
    cache = msal.SerializableTokenCache()
    app = authority.public_client(token_cache=cache)
    for username in (ADA, BOB):
        authority.sign_in(app, username=username)
    accounts = {account["username"]: account for account in app.get_accounts()}
    return authority, json.loads(cache.serialize()), accounts


def damage(
    document: dict[str, Any], section: str, home_account_id: str, changes: dict[str, object]
) -> str:
    """The document's JSON text with one entry of ``section`` (Ada's) changed."""
    document = json.loads(json.dumps(document))
    (entry,) = (
        e for e in document[section].values() if e.get("home_account_id") == home_account_id
    )
    for field, value in changes.items():
        if value is MISSING:
            del entry[field]
        else:
            entry[field] = value
    text = json.dumps(document)
    for placeholder, literal in LITERALS.items():
        text = text.replace(placeholder, literal)
    return text


def app_on(authority: LocalAuthority, text: str) -> msal.PublicClientApplication:
    """A real msal app over a plain in-memory cache holding exactly ``text``."""
    cache = msal.SerializableTokenCache()
    cache.deserialize(text)
    return authority.public_client(token_cache=cache)


# msal 1.39's search() reads every access token of the section to drop expired ones, so one
# bad entry breaks every account's acquire_token_silent; older msal (1.29) reads only the
# entries of the account asked for, and never drops expired ones while searching.
SEARCH_DROPS_EXPIRED = "expires_on" in inspect.getsource(msal.TokenCache.search)
HARMLESS_UNLESS_SEARCH_DROPS_EXPIRED = {"expired access token without credential_type"}
MSAL_ERRORS = (ValueError, OverflowError, KeyError, AttributeError, TypeError, AssertionError)


def raises(trigger: Trigger, app: msal.PublicClientApplication, accounts: Accounts) -> bool:
    try:
        trigger(app, accounts)
    except MSAL_ERRORS:
        return True
    return False


@pytest.mark.parametrize("case", list(CASES))
def test_msal_raises_on_the_damaged_document_as_is(signed_in, case: str) -> None:
    """Without validation, the damaged entry makes a real msal call raise (the issue).

    With the installed msal, either the case's own call raises or, where msal reads only
    the asked account's entries, a silent acquisition for the damaged account does.
    """
    authority, document, accounts = signed_in
    section, changes, trigger = CASES[case]
    text = damage(document, section, accounts[ADA]["home_account_id"], changes)
    triggers = [trigger] if SEARCH_DROPS_EXPIRED else [trigger, silent(ADA)]
    raised = any(raises(t, app_on(authority, text), accounts) for t in triggers)
    if not SEARCH_DROPS_EXPIRED and case in HARMLESS_UNLESS_SEARCH_DROPS_EXPIRED:
        assert not raised  # this msal never reads it; it is left out all the same
    else:
        assert raised


@pytest.mark.parametrize("case", list(CASES))
def test_msal_never_raises_on_what_decode_keeps(signed_in, case: str) -> None:
    """The decoded state drops just the bad entry: msal works and Bob's token is a cache hit."""
    authority, document, accounts = signed_in
    section, changes, trigger = CASES[case]
    text = damage(document, section, accounts[ADA]["home_account_id"], changes)
    decoded = decode_document(text)
    assert decoded.rejected == 1
    assert decoded.problems[0].startswith(f"{section} entry: ")
    app = app_on(authority, json.dumps(decoded.state))

    trigger(app, accounts)

    assert {a["username"] for a in app.get_accounts()} >= {BOB}
    result = app.acquire_token_silent(DEFAULT_SCOPES, accounts[BOB])
    assert result is not None
    assert result["token_source"] == "cache"
    bob_access_token = next(
        e["secret"]
        for e in document["AccessToken"].values()
        if e["home_account_id"] == accounts[BOB]["home_account_id"]
    )
    assert result["access_token"] == bob_access_token


def test_the_undamaged_document_is_kept_whole(signed_in) -> None:
    """A cache msal wrote passes as it is: nothing is left out of a healthy document."""
    _, document, _ = signed_in
    decoded = decode_document(json.dumps(document))
    assert (decoded.rejected, decoded.state) == (0, document)
