from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msal
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msal_persist import PersistedTokenCache
from msal_persist.testing import (
    AZURE_CLI_CLIENT_ID,
    AZURE_POWERSHELL_CLIENT_ID,
    DEFAULT_CLIENT_ID,
    DEFAULT_FAMILY_CLIENT_IDS,
    DEFAULT_SCOPES,
    DEFAULT_TENANT_ID,
    DEFAULT_USERNAME,
    DEVICE_CODE_GRANT,
    LocalAuthority,
    LocalHTTPError,
)

ROPC_DEPRECATION = "ignore:This API has been deprecated for public client flows:DeprecationWarning"
OTHER_TENANT_ID = "00000000-0000-4000-8000-0000000000b2"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Fail the test, past any ``except Exception`` in msal, if anything leaves the process."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        pytest.fail("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def authority() -> LocalAuthority:
    return LocalAuthority()


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_endpoint(authority: LocalAuthority) -> str:
    return f"{authority.authority}/oauth2/v2.0/token"


def account_of(app: Any) -> dict[str, Any]:
    (account,) = app.get_accounts()
    return account


def test_device_flow_signs_in_the_configured_user(authority):
    """Device code flow is approved at once for ``username``, with no polling."""
    authority.username = "dana@example.test"
    app = authority.public_client()

    flow = app.initiate_device_flow(DEFAULT_SCOPES)
    result = app.acquire_token_by_device_flow(flow)

    assert "user_code" in flow
    assert flow["user_code"] in flow["message"]
    assert "access_token" in result, result
    account = account_of(app)
    assert account["username"] == "dana@example.test"
    assert account["home_account_id"] == authority.home_account_id("dana@example.test")
    assert authority.hits_by_grant == {DEVICE_CODE_GRANT: 1}


def test_auth_code_flow_signs_in_the_configured_user(authority):
    """Authorization code flow with PKCE and nonce signs in ``username``."""
    app = authority.public_client()

    flow = app.initiate_auth_code_flow(DEFAULT_SCOPES, response_mode="form_post")
    result = app.acquire_token_by_auth_code_flow(flow, authority.authorize(flow["auth_uri"]))

    assert "access_token" in result, result
    assert result["id_token_claims"]["nonce"]  # msal checked it against its own
    assert account_of(app)["username"] == DEFAULT_USERNAME
    assert authority.hits_by_grant == {"authorization_code": 1}


def test_auth_code_flow_signs_in_the_login_hint(authority):
    """An authorization request's ``login_hint`` chooses who signs in."""
    app = authority.public_client()

    flow = app.initiate_auth_code_flow(
        DEFAULT_SCOPES, login_hint="erin@example.test", response_mode="form_post"
    )
    app.acquire_token_by_auth_code_flow(flow, authority.authorize(flow["auth_uri"]))

    assert account_of(app)["username"] == "erin@example.test"


def test_auth_code_with_wrong_code_verifier_is_invalid_grant(authority):
    """A code redeemed without its PKCE verifier is refused."""
    app = authority.public_client()
    flow = app.initiate_auth_code_flow(DEFAULT_SCOPES, response_mode="form_post")
    auth_response = authority.authorize(flow["auth_uri"])
    flow["code_verifier"] = "x" * 43

    result = app.acquire_token_by_auth_code_flow(flow, auth_response)

    assert result["error"] == "invalid_grant"
    assert app.get_accounts() == []


def test_authorize_refuses_a_request_for_another_tenant(authority):
    """``authorize`` only plays the browser for its own tenant."""
    app = LocalAuthority(tenant_id=OTHER_TENANT_ID).public_client()
    flow = app.initiate_auth_code_flow(DEFAULT_SCOPES, response_mode="form_post")

    with pytest.raises(ValueError, match="not an authorization request"):
        authority.authorize(flow["auth_uri"])


@pytest.mark.filterwarnings(ROPC_DEPRECATION)
def test_password_grant_signs_in_the_named_user(authority):
    """ROPC signs in the username it posts, with any password, after user realm discovery."""
    app = authority.public_client()

    result = app.acquire_token_by_username_password("fay@example.test", "any", DEFAULT_SCOPES)

    assert "access_token" in result, result
    account = account_of(app)
    assert account["username"] == "fay@example.test"
    assert account["home_account_id"] == authority.home_account_id("fay@example.test")
    assert authority.hits_by_grant == {"password": 1}


def test_force_refresh_redeems_the_cached_refresh_token(authority):
    """``acquire_token_silent(force_refresh=True)`` is one refresh token grant with new tokens."""
    app = authority.public_client()
    first = authority.sign_in(app)
    authority.reset_counters()

    result = app.acquire_token_silent(DEFAULT_SCOPES, account_of(app), force_refresh=True)

    assert result["access_token"] != first["access_token"]
    assert authority.hits_by_grant == {"refresh_token": 1}
    (rt,) = app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN)
    assert rt["secret"] == result["refresh_token"] != first["refresh_token"]


def test_fresh_access_token_is_served_from_msal_cache(authority):
    """A silent call within the access token lifetime reaches no endpoint."""
    app = authority.public_client()
    first = authority.sign_in(app)
    authority.reset_counters()

    result = app.acquire_token_silent(DEFAULT_SCOPES, account_of(app))

    assert result["access_token"] == first["access_token"]
    assert authority.token_endpoint_hits == 0


@pytest.mark.parametrize(("lifetime", "refreshes"), [(-60, 1), (0, 1), (299, 1), (600, 0)])
def test_access_token_lifetime_decides_when_msal_refreshes(lifetime, refreshes):
    """A silent call refreshes once the access token has under 5 minutes left."""
    authority = LocalAuthority(access_token_lifetime=lifetime)
    app = authority.public_client()
    authority.sign_in(app)
    authority.reset_counters()

    result = app.acquire_token_silent(DEFAULT_SCOPES, account_of(app))

    assert "access_token" in result
    assert authority.hits_by_grant == ({"refresh_token": 1} if refreshes else {})


def test_client_credentials_for_a_confidential_client(authority):
    """Client credentials return an app-only access token, then msal serves it from cache."""
    app = authority.confidential_client()

    first = app.acquire_token_for_client(["api://local/.default"])
    second = app.acquire_token_for_client(["api://local/.default"])

    assert "access_token" in first, first
    assert not {"refresh_token", "id_token", "client_info"} & first.keys()
    assert second["access_token"] == first["access_token"]
    assert app.get_accounts() == []
    assert authority.hits_by_grant == {"client_credentials": 1}


def test_client_credentials_need_a_default_scope(authority):
    """Client credentials for a delegated scope are refused as Entra ID does."""
    result = authority.confidential_client().acquire_token_for_client(DEFAULT_SCOPES)

    assert result["error"] == "invalid_scope"


def test_client_credentials_need_a_secret(authority):
    """A client credentials request without a secret is an unauthenticated client."""
    response = authority.post(
        token_endpoint(authority),
        data={
            "grant_type": "client_credentials",
            "client_id": DEFAULT_CLIENT_ID,
            "scope": "api://local/.default",
        },
    )

    assert response.status_code == 401
    assert json.loads(response.text)["error"] == "invalid_client"


def test_sign_in_works_for_a_confidential_client(authority):
    """``sign_in`` signs a user in to a web app, which authenticates with its secret."""
    app = authority.confidential_client()

    authority.sign_in(app, "kim@example.test")

    assert account_of(app)["username"] == "kim@example.test"


def test_user_token_response_is_shaped_like_entra_id(authority):
    """A user sign-in returns every field Entra ID does, with a v2.0 id token."""
    result = authority.sign_in(authority.public_client(), "gil@example.test")

    assert result.keys() >= {"access_token", "refresh_token", "id_token", "client_info"}
    expected = {"token_type": "Bearer", "expires_in": 3600, "ext_expires_in": 3600}
    assert result.items() >= expected.items()
    assert set(result["scope"].split()) == {"openid", "profile", *DEFAULT_SCOPES}
    id_token = claims(result["id_token"])
    assert id_token["aud"] == DEFAULT_CLIENT_ID
    assert id_token["iss"] == f"https://login.microsoftonline.com/{DEFAULT_TENANT_ID}/v2.0"
    assert id_token["tid"] == DEFAULT_TENANT_ID
    assert id_token["preferred_username"] == "gil@example.test"
    assert id_token["ver"] == "2.0"
    assert id_token["nbf"] <= id_token["iat"] < id_token["exp"]
    assert {"sub", "oid", "name"} <= id_token.keys()
    client_info = claims(f".{result['client_info']}.")
    assert client_info == {"uid": id_token["oid"], "utid": DEFAULT_TENANT_ID}
    assert authority.home_account_id("gil@example.test") == f"{id_token['oid']}.{id_token['tid']}"


@pytest.mark.filterwarnings(ROPC_DEPRECATION)
def test_every_issued_token_is_unique(authority):
    """Access, refresh and id tokens and codes are never issued twice, even for one user."""
    app = authority.public_client()
    results = [authority.sign_in(app) for _ in range(3)]
    results.append(app.acquire_token_by_username_password(DEFAULT_USERNAME, "pw", DEFAULT_SCOPES))
    results.append(app.acquire_token_by_device_flow(app.initiate_device_flow(DEFAULT_SCOPES)))
    results.append(app.acquire_token_silent(DEFAULT_SCOPES, account_of(app), force_refresh=True))
    codes = [
        authority.authorize(
            app.initiate_auth_code_flow(DEFAULT_SCOPES, response_mode="form_post")["auth_uri"]
        )["code"]
        for _ in range(2)
    ]

    tokens = [r[k] for r in results for k in ("access_token", "refresh_token", "id_token")]
    assert len(set(tokens + codes)) == len(tokens) + len(codes)


def test_the_same_user_has_the_same_home_account_id_everywhere():
    """A user's home account id depends only on tenant and username, not on the instance."""
    first, second = LocalAuthority(), LocalAuthority()

    assert first.home_account_id("Hal@Example.test") == second.home_account_id("hal@example.test")
    assert first.home_account_id("hal@example.test") != first.home_account_id("ida@example.test")
    oid, _, tid = first.home_account_id("hal@example.test").partition(".")
    assert tid == DEFAULT_TENANT_ID
    assert oid != tid


def test_refresh_token_from_one_instance_is_accepted_by_another():
    """A refresh token issued by one LocalAuthority is redeemed by another for the same tenant."""
    issuer, redeemer = LocalAuthority(), LocalAuthority()
    signed_in = issuer.sign_in(issuer.public_client(), "jo@example.test")
    app = redeemer.public_client()

    result = app.acquire_token_by_refresh_token(signed_in["refresh_token"], DEFAULT_SCOPES)

    assert "access_token" in result, result
    assert account_of(app)["home_account_id"] == issuer.home_account_id("jo@example.test")
    assert redeemer.hits_by_grant == {"refresh_token": 1}
    assert issuer.hits_by_grant == {"authorization_code": 1}


def test_refresh_token_is_accepted_in_another_process(authority):
    """A fresh interpreter redeems a refresh token issued here, for the same home account."""
    refresh_token = authority.sign_in(authority.public_client())["refresh_token"]
    redeem = (
        "import sys\n"
        "from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority\n"
        "app = LocalAuthority().public_client()\n"
        "app.acquire_token_by_refresh_token(sys.argv[1], DEFAULT_SCOPES)\n"
        "print(app.get_accounts()[0]['home_account_id'])\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", redeem, refresh_token],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        check=True,
    )

    assert done.stdout.strip() == authority.home_account_id()


def test_refresh_token_is_refused_by_another_tenant(authority):
    """A refresh token issued for one tenant is invalid_grant in another."""
    refresh_token = authority.sign_in(authority.public_client())["refresh_token"]
    app = LocalAuthority(tenant_id=OTHER_TENANT_ID).public_client()

    result = app.acquire_token_by_refresh_token(refresh_token, DEFAULT_SCOPES)

    assert result["error"] == "invalid_grant"


def test_refresh_token_is_refused_for_another_client(authority):
    """A refresh token issued to one client is invalid_grant for another."""
    refresh_token = authority.sign_in(authority.public_client())["refresh_token"]
    app = authority.public_client(client_id="00000000-0000-4000-8000-0000000000c3")

    result = app.acquire_token_by_refresh_token(refresh_token, DEFAULT_SCOPES)

    assert result["error"] == "invalid_grant"


def test_garbage_refresh_token_is_invalid_grant(authority):
    """A refresh token this authority never issued is invalid_grant."""
    app = authority.public_client()

    result = app.acquire_token_by_refresh_token("garbage", DEFAULT_SCOPES)

    assert result["error"] == "invalid_grant"
    assert authority.hits_by_grant == {"refresh_token": 1}


def test_repeated_failure_is_answered_by_msal_http_cache(authority):
    """An identical HTTP 400 within 60 s comes from msal's per-app HTTP cache, uncounted."""
    app = authority.public_client()

    results = [app.acquire_token_by_refresh_token("garbage", DEFAULT_SCOPES) for _ in range(2)]

    assert [r["error"] for r in results] == ["invalid_grant"] * 2
    assert authority.token_endpoint_hits == 1
    authority.public_client().acquire_token_by_refresh_token("garbage", DEFAULT_SCOPES)
    assert authority.token_endpoint_hits == 2


@given(st.text(min_size=1))
def test_any_forged_refresh_token_is_invalid_grant(refresh_token):
    """Whatever text is posted as a refresh token, the answer is a 400 invalid_grant."""
    authority = LocalAuthority()
    response = authority.post(
        token_endpoint(authority),
        data={
            "grant_type": "refresh_token",
            "client_id": DEFAULT_CLIENT_ID,
            "refresh_token": refresh_token,
        },
    )

    assert response.status_code == 400
    assert json.loads(response.text)["error"] == "invalid_grant"


@given(st.integers(min_value=0), st.characters(codec="ascii"))
def test_tampered_refresh_token_is_invalid_grant(position, replacement):
    """Changing any character of a real refresh token makes it invalid_grant."""
    authority = LocalAuthority()
    issued = authority.sign_in(authority.public_client())["refresh_token"]
    index = position % len(issued)
    tampered = issued[:index] + replacement + issued[index + 1 :]
    response = authority.post(
        token_endpoint(authority),
        data={
            "grant_type": "refresh_token",
            "client_id": DEFAULT_CLIENT_ID,
            "refresh_token": tampered,
        },
    )

    assert (response.status_code == 200) == (tampered == issued)


def test_counters_count_every_token_request_and_reset(authority):
    """Counters count each token endpoint POST by grant type, errors included, until reset."""
    app = authority.public_client()
    authority.sign_in(app)
    app.acquire_token_by_refresh_token("garbage", DEFAULT_SCOPES)
    authority.post(token_endpoint(authority), data={"grant_type": "magic"})
    snapshot = authority.hits_by_grant
    snapshot["magic"] = 100

    assert authority.hits_by_grant == {"authorization_code": 1, "refresh_token": 1, "magic": 1}
    assert authority.token_endpoint_hits == 3
    authority.reset_counters()
    assert authority.hits_by_grant == {}
    assert authority.token_endpoint_hits == 0


def test_counters_are_exact_under_concurrent_requests(authority):
    """Token endpoint POSTs from many threads are all counted."""
    garbage = {"grant_type": "refresh_token", "client_id": "c", "refresh_token": "x"}

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(400):
            pool.submit(authority.post, token_endpoint(authority), data=garbage)

    assert authority.hits_by_grant == {"refresh_token": 400}


def test_unsupported_grant_type_is_an_oauth_error(authority):
    """An unknown grant type gets OAuth's unsupported_grant_type."""
    response = authority.post(token_endpoint(authority), data="grant_type=magic&client_id=x")

    assert response.status_code == 400
    assert json.loads(response.text)["error"] == "unsupported_grant_type"


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "https://example.com/"),
        (
            "get",
            f"https://login.microsoftonline.com/{OTHER_TENANT_ID}/v2.0/.well-known/openid-configuration",
        ),
        ("post", f"https://login.microsoftonline.com/{OTHER_TENANT_ID}/oauth2/v2.0/token"),
        ("post", f"http://login.microsoftonline.com/{DEFAULT_TENANT_ID}/oauth2/v2.0/token"),
    ],
)
def test_unknown_url_is_a_json_404(authority, method, url):
    """Anything this authority does not serve is a 404 with a JSON error, never the network."""
    response = getattr(authority, method)(url)

    assert response.status_code == 404
    assert json.loads(response.text)["error"] == "not_found"
    with pytest.raises(LocalHTTPError, match="HTTP 404"):
        response.raise_for_status()


def test_app_for_another_tenant_fails_discovery(authority):
    """No app can be built for a tenant this authority does not serve."""
    other = LocalAuthority(tenant_id=OTHER_TENANT_ID).authority

    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal.PublicClientApplication(DEFAULT_CLIENT_ID, authority=other, http_client=authority)


def test_get_accounts_on_an_empty_cache_is_answered(authority):
    """The instance discovery msal makes when it finds no account is answered."""
    assert authority.public_client().get_accounts() == []
    assert authority.token_endpoint_hits == 0


# -- the family of client ids (FOCI) -------------------------------------------------------


def test_family_clients_get_family_refresh_tokens_and_share_the_sign_in(cache_path):
    """A sign-in by one family app serves another through the cache, as Entra ID does."""
    authority = LocalAuthority(username="ada@example.test")
    cli = authority.public_client(PersistedTokenCache(cache_path), client_id=AZURE_CLI_CLIENT_ID)
    result = authority.sign_in(cli)
    assert result["foci"] == "1"
    document = json.loads(cache_path.read_bytes())
    (refresh_token,) = document["RefreshToken"].values()
    assert refresh_token["family_id"] == "1"
    assert document["AppMetadata"][next(iter(document["AppMetadata"]))]["family_id"] == "1"

    authority.reset_counters()
    powershell = authority.public_client(
        PersistedTokenCache(cache_path), client_id=AZURE_POWERSHELL_CLIENT_ID
    )
    (account,) = powershell.get_accounts()
    token = powershell.acquire_token_silent(DEFAULT_SCOPES, account)
    assert token is not None
    assert token["token_source"] == "identity_provider"
    assert authority.hits_by_grant == {"refresh_token": 1}  # the family token, redeemed
    assert token["foci"] == "1"


def test_a_client_outside_the_family_cannot_redeem_a_family_token(cache_path):
    authority = LocalAuthority(username="ada@example.test")
    cli = authority.public_client(PersistedTokenCache(cache_path), client_id=AZURE_CLI_CLIENT_ID)
    authority.sign_in(cli)
    authority.reset_counters()
    outsider = authority.public_client(PersistedTokenCache(cache_path))
    (account,) = outsider.get_accounts()
    assert outsider.acquire_token_silent(DEFAULT_SCOPES, account) is None
    assert authority.hits_by_grant == {"refresh_token": 1}  # tried once, refused


def test_the_family_is_configurable():
    assert LocalAuthority().family_client_ids == DEFAULT_FAMILY_CLIENT_IDS
    authority = LocalAuthority(family_client_ids=[DEFAULT_CLIENT_ID])
    result = authority.sign_in(authority.public_client())
    assert result["foci"] == "1"
    default = LocalAuthority()
    assert "foci" not in default.sign_in(default.public_client())  # not a family app


def test_fail_token_requests_fails_the_next_ones_and_counts_them(authority):
    """fail_token_requests(): the next ``count`` token requests get that error, then tokens."""
    app = authority.confidential_client()
    authority.fail_token_requests("temporarily_unavailable", "try later", status=400, count=1)

    failed = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])
    # A new app: msal's own HTTP cache would replay the 400 to the same one.
    succeeded = authority.confidential_client().acquire_token_for_client(
        ["https://graph.microsoft.com/.default"]
    )

    assert failed["error"] == "temporarily_unavailable"
    assert failed["error_description"] == "try later"
    assert "access_token" in succeeded
    assert authority.token_endpoint_hits == 2


def test_token_delay_and_hook_see_each_request_before_it_is_answered(authority):
    """token_delay holds each answer back; on_token_request sees each form as it arrives."""
    seen: list[str] = []
    authority.on_token_request = lambda form: seen.append(form["grant_type"])
    authority.token_delay = 0.2
    app = authority.confidential_client()

    started = time.monotonic()
    result = app.acquire_token_for_client(["https://graph.microsoft.com/.default"])

    assert "access_token" in result
    assert time.monotonic() - started >= 0.2
    assert seen == ["client_credentials"]
