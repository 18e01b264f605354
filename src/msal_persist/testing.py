"""A local, in-process stand-in for Microsoft Entra ID, for tests.

:class:`LocalAuthority` answers the HTTP requests that msal makes, through msal's
``http_client=`` parameter, so real ``msal`` applications sign users in, refresh and
cache tokens without any network. It serves OpenID Connect discovery, instance
discovery, user realm discovery, the device authorization endpoint and the token
endpoint with the device code, authorization code, refresh token, password and client
credentials grants.

Tokens are self-describing and signed with a fixed key, so a refresh token issued by
one :class:`LocalAuthority` is accepted by any other one for the same tenant, in this
process or another, the way a token cache shared between processes needs. Counters
tell how many requests reached the token endpoint::

    import msal
    from msal_persist.testing import DEFAULT_SCOPES, LocalAuthority

    def test_refresh_reaches_the_authority_once():
        authority = LocalAuthority(username="ada@example.test")
        app = authority.public_client(token_cache=msal.SerializableTokenCache())
        authority.sign_in(app)
        (account,) = app.get_accounts()
        authority.reset_counters()

        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=True)

        assert "access_token" in result
        assert authority.hits_by_grant == {"refresh_token": 1}

To test what happens when the authority misbehaves, :meth:`LocalAuthority.fail_token_requests`
makes the next token requests fail with an OAuth error, :attr:`LocalAuthority.token_delay`
makes every answer wait (a slow or hung authority), and
:attr:`LocalAuthority.on_token_request` runs your function as each request arrives (to
announce it, or to hang only the first request of several processes)::

    authority.fail_token_requests("temporarily_unavailable", count=1)
    authority.token_delay = 0.5

The tokens prove nothing outside these tests: the signing key is public.

For encrypted caches whose key lives in the OS keyring, :func:`secret_service` starts a
private gnome-keyring Secret Service on a D-Bus session bus of its own, so that tests use
the real keyring without touching the user's.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

import msal

if TYPE_CHECKING:
    from ._secret_service import SecretServiceError, secret_service

__all__ = [
    "AZURE_CLI_CLIENT_ID",
    "AZURE_POWERSHELL_CLIENT_ID",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_FAMILY_CLIENT_IDS",
    "DEFAULT_SCOPES",
    "DEFAULT_TENANT_ID",
    "DEFAULT_USERNAME",
    "DEVICE_CODE_GRANT",
    "LocalAuthority",
    "LocalHTTPError",
    "LocalResponse",
    "SecretServiceError",
    "secret_service",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: this module must load on its own, from its file, in processes
    # that must not import msal_persist (the msal-extensions peers of tests_interop/).
    if name in {"SecretServiceError", "secret_service"}:
        from . import _secret_service  # noqa: PLC0415

        return getattr(_secret_service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_TENANT_ID: Final = "00000000-0000-4000-8000-00000000a11e"
"""The tenant GUID a :class:`LocalAuthority` serves unless told otherwise."""

DEFAULT_CLIENT_ID: Final = "00000000-0000-4000-8000-0000000c11e7"
"""The application (client) id the convenience constructors use by default."""

AZURE_CLI_CLIENT_ID: Final = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
"""Azure CLI's public client id, which azure-identity's developer credentials use too."""

AZURE_POWERSHELL_CLIENT_ID: Final = "1950a258-227b-4e31-a9cf-717495945fc2"
"""Azure PowerShell's public client id."""

DEFAULT_FAMILY_CLIENT_IDS: Final = frozenset({AZURE_CLI_CLIENT_ID, AZURE_POWERSHELL_CLIENT_ID})
"""The client ids a :class:`LocalAuthority` treats as one family (FOCI) unless told otherwise.

Entra ID issues *family* refresh tokens to Microsoft's first-party apps of the "family of
client ids" (Azure CLI, Azure PowerShell, Visual Studio, ...): any app of the family can
redeem one, and msal shares sign-ins across them through the cache. Tools that trust only
family refresh tokens, such as azure-identity's ``SharedTokenCacheCredential``, need them.
"""

DEFAULT_CLIENT_SECRET: Final = "local-authority-client-secret"  # noqa: S105 - a test fixture
"""The client secret :meth:`LocalAuthority.confidential_client` uses by default."""

DEFAULT_USERNAME: Final = "user@example.test"
"""The user who signs in through device code and authorization code by default."""

DEFAULT_SCOPES: Final[list[str]] = ["User.Read"]
"""Scopes to request in tests; a list, because some msal methods accept nothing else."""

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
"""The ``grant_type`` msal sends to redeem a device code, as counted in ``hits_by_grant``."""

_HOST: Final = "login.microsoftonline.com"
# A host msal knows, so it validates the authority without instance discovery.
# Requests for it still reach only the http_client that msal was given.

_WORLDWIDE_ALIASES: Final = (
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
)
_MULTI_TENANT: Final = ("organizations", "common")
_DEVICE_LOGIN_URI: Final = "https://microsoft.com/devicelogin"
_KEY: Final = b"msal-persist LocalAuthority"
# Public on purpose: the signature only tells tokens this module issued from garbage.
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://pypi.org/project/msal-persist/")
_ID_TOKEN_LIFETIME: Final = 3600
_CODE_LIFETIME: Final = 600
_DEVICE_CODE_LIFETIME: Final = 900
_REFRESH_TOKEN_LIFETIME: Final = 90 * 24 * 3600


class LocalHTTPError(RuntimeError):
    """Raised by :meth:`LocalResponse.raise_for_status` for an error response."""

    def __init__(self, status_code: int, text: str) -> None:
        """Describe the failed response.

        Args:
            status_code: The HTTP status of the response.
            text: The body of the response.
        """
        super().__init__(f"HTTP {status_code}: {text}")
        self.status_code = status_code


@dataclasses.dataclass(frozen=True)
class LocalResponse:
    """An HTTP response with the members msal reads.

    Attributes:
        status_code: The HTTP status.
        text: The body, JSON for every response :class:`LocalAuthority` gives.
        headers: The response headers.
    """

    status_code: int
    text: str
    headers: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"Content-Type": "application/json; charset=utf-8"}
    )

    def raise_for_status(self) -> None:
        """Raise for an error status, as ``requests`` does.

        Raises:
            LocalHTTPError: If the status is 400 or above.
        """
        if self.status_code >= 400:
            raise LocalHTTPError(self.status_code, self.text)


@dataclasses.dataclass(frozen=True)
class _Grant:
    """What a refresh token, an authorization code or a device code stands for."""

    kind: str
    tenant_id: str
    client_id: str
    username: str
    scope: str
    expires_at: int
    uti: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    redirect_uri: str = ""
    nonce: str = ""
    code_challenge: str = ""

    @classmethod
    def parse(cls, claims: Mapping[str, object]) -> _Grant | None:
        """Rebuild a grant from verified claims, or None if they hold no grant."""
        names = {field.name for field in dataclasses.fields(cls)}
        strings = {k: v for k, v in claims.items() if isinstance(v, str)}
        expires_at = claims.get("expires_at")
        if set(claims) != names or set(strings) != names - {"expires_at"}:
            return None
        if not isinstance(expires_at, int):
            return None
        return cls(expires_at=expires_at, **strings)


class _OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749, section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class LocalAuthority:
    """An in-process Microsoft Entra ID tenant, to use as msal's ``http_client``.

    It never touches the network: requests it does not serve get a 404 with a JSON
    error. Every token it issues is unique. It is safe to share between threads.

    Attributes:
        username: Who signs in through the device code and authorization code grants
            when the request names nobody. The password grant signs in the user it
            names, with any password.
        access_token_lifetime: ``expires_in`` of new access tokens, in seconds. msal
            treats an access token with less than 5 minutes left as expired, so any
            value below 300 makes the next silent call refresh.
        family_client_ids: The client ids of the family (FOCI): their token responses
            carry ``"foci": "1"``, and a refresh token issued to one of them is accepted
            from any other, as Entra ID does. Any other client that presents a family
            refresh token is refused with ``invalid_grant``.
        token_delay: Seconds each token request waits before it is answered (counted
            on arrival); ``0`` answers at once. A large value plays a hung authority.
        on_token_request: Called with the posted form (a ``dict``) as each token request
            arrives, after it is counted and before it is answered; ``None``: nothing.
            What it raises reaches msal as a transport error.
    """

    def __init__(
        self,
        *,
        tenant_id: str = DEFAULT_TENANT_ID,
        username: str = DEFAULT_USERNAME,
        access_token_lifetime: int = 3600,
        family_client_ids: Iterable[str] = DEFAULT_FAMILY_CLIENT_IDS,
    ) -> None:
        """Create a tenant.

        Args:
            tenant_id: The tenant GUID. Instances with the same one accept each
                other's tokens.
            username: The initial value of :attr:`username`.
            access_token_lifetime: The initial value of :attr:`access_token_lifetime`.
            family_client_ids: The initial value of :attr:`family_client_ids`.
        """
        self._tenant_id = str(uuid.UUID(tenant_id))
        self.username = username
        self.access_token_lifetime = access_token_lifetime
        self.family_client_ids = frozenset(family_client_ids)
        self.token_delay = 0.0
        self.on_token_request: Callable[[dict[str, str]], object] | None = None
        self._lock = threading.Lock()
        self._hits_by_grant: dict[str, int] = {}
        self._failures: list[_OAuthError] = []
        self._grants = {
            "authorization_code": self._authorization_code_grant,
            "client_credentials": self._client_credentials_grant,
            DEVICE_CODE_GRANT: self._device_code_grant,
            "password": self._password_grant,
            "refresh_token": self._refresh_token_grant,
        }

    @property
    def tenant_id(self) -> str:
        """The tenant GUID, in canonical lowercase form."""
        return self._tenant_id

    @property
    def authority(self) -> str:
        """The URL to pass as msal's ``authority=``."""
        return f"https://{_HOST}/{self._tenant_id}"

    @property
    def token_endpoint_hits(self) -> int:
        """How many POSTs reached the token endpoint, whatever their outcome."""
        with self._lock:
            return sum(self._hits_by_grant.values())

    @property
    def hits_by_grant(self) -> dict[str, int]:
        """A snapshot of :attr:`token_endpoint_hits` by the ``grant_type`` posted.

        Keys are as sent on the wire, such as ``"refresh_token"`` or
        :data:`DEVICE_CODE_GRANT`; a request without one counts under ``""``.
        """
        with self._lock:
            return dict(self._hits_by_grant)

    def reset_counters(self) -> None:
        """Set :attr:`token_endpoint_hits` and :attr:`hits_by_grant` back to zero."""
        with self._lock:
            self._hits_by_grant.clear()

    def fail_token_requests(
        self,
        error: str = "temporarily_unavailable",
        description: str = "LocalAuthority was told to fail this request.",
        *,
        status: int = 400,
        count: int = 1,
    ) -> None:
        """Answer the next ``count`` token requests with an OAuth error, whatever they ask.

        The failed requests are counted like any other.

        Args:
            error: The OAuth ``error`` code, such as ``"invalid_grant"`` or
                ``"temporarily_unavailable"``.
            description: The ``error_description``.
            status: The HTTP status of the error response.
            count: How many requests fail; more calls add more.
        """
        with self._lock:
            self._failures.extend(_OAuthError(error, description, status) for _ in range(count))

    def home_account_id(self, username: str | None = None) -> str:
        """The ``home_account_id`` msal gives the user, the same in every process.

        Args:
            username: The user; :attr:`username` if None. Case does not matter.

        Returns:
            ``"<object id>.<tenant id>"``.
        """
        return f"{self._object_id(username or self.username)}.{self._tenant_id}"

    def get(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> LocalResponse:
        """Answer an HTTP GET from msal.

        Args:
            url: The URL; its query string does not matter.
            params: Query parameters; they do not matter.
            headers: Request headers; they do not matter.
            **kwargs: Transport options msal may pass; ignored.

        Returns:
            Discovery metadata, or a 404.
        """
        del params, headers, kwargs
        path = _path(url)
        if path == f"/{self._tenant_id}/v2.0/.well-known/openid-configuration":
            return _json(200, self._openid_configuration())
        if path == "/common/discovery/instance":
            return _json(200, self._instance_metadata())
        if path is not None and path.startswith("/common/userrealm/"):
            return _json(200, _user_realm(path.removeprefix("/common/userrealm/")))
        return _not_found("GET", url)

    def post(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> LocalResponse:
        """Answer an HTTP POST from msal.

        Args:
            url: The URL.
            params: Query parameters; they do not matter.
            data: The form body, as a mapping or urlencoded.
            headers: Request headers; ``client-request-id`` is echoed in errors.
            **kwargs: Transport options msal may pass; ignored.

        Returns:
            A token or device code response, an OAuth error, or a 404.
        """
        del params, kwargs
        form = _form(data)
        path = _path(url)
        # Like Entra ID, the multi-tenant endpoints issue tokens of the user's home tenant
        # (azure-identity's shared-cache credential refreshes through /organizations).
        if path in {f"/{tenant}/oauth2/v2.0/token" for tenant in (self._tenant_id, *_MULTI_TENANT)}:
            handle = self._token
        elif path == f"/{self._tenant_id}/oauth2/v2.0/devicecode":
            handle = self._device_authorization
        else:
            return _not_found("POST", url)
        try:
            return _json(200, handle(form))
        except _OAuthError as e:
            return _json(
                e.status,
                {
                    "error": e.error,
                    "error_description": e.description,
                    "correlation_id": dict(headers or {}).get("client-request-id", ""),
                },
            )

    def close(self) -> None:
        """Do nothing: there is no connection to close."""

    def authorize(self, auth_uri: str) -> dict[str, str]:
        """Play the browser: sign a user in at ``auth_uri`` and return the redirect.

        The user is the request's ``login_hint`` if it has one, else :attr:`username`.

        Args:
            auth_uri: The ``"auth_uri"`` of msal's ``initiate_auth_code_flow()``.

        Returns:
            The auth response for msal's ``acquire_token_by_auth_code_flow()``:
            ``"code"``, and ``"state"`` if the request had one.

        Raises:
            ValueError: If ``auth_uri`` is not an authorization request to this tenant.
        """
        query = dict(parse_qsl(urlsplit(auth_uri).query))
        if _path(auth_uri) != f"/{self._tenant_id}/oauth2/v2.0/authorize":
            raise ValueError(f"not an authorization request to {self.authority}")
        if query.get("response_type") != "code" or not query.get("client_id"):
            raise ValueError("an authorization request needs response_type=code and client_id")
        code = _Grant(
            kind="code",
            tenant_id=self._tenant_id,
            client_id=query["client_id"],
            username=query.get("login_hint") or self.username,
            scope=query.get("scope", ""),
            expires_at=int(time.time()) + _CODE_LIFETIME,
            redirect_uri=query.get("redirect_uri", ""),
            nonce=query.get("nonce", ""),
            code_challenge=query.get("code_challenge", ""),
        )
        response = {"code": _seal(dataclasses.asdict(code))}
        if "state" in query:
            response["state"] = query["state"]
        return response

    def public_client(
        self,
        token_cache: msal.TokenCache | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        **kwargs: Any,
    ) -> msal.PublicClientApplication:
        """Create a msal public client application that talks only to this tenant.

        Args:
            token_cache: The cache for msal to use; msal makes an in-memory one if None.
            client_id: The application (client) id.
            **kwargs: More ``msal.PublicClientApplication`` arguments.

        Returns:
            The application.
        """
        return msal.PublicClientApplication(
            client_id,
            authority=self.authority,
            http_client=self,
            token_cache=token_cache,
            **kwargs,
        )

    def confidential_client(
        self,
        token_cache: msal.TokenCache | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        **kwargs: Any,
    ) -> msal.ConfidentialClientApplication:
        """Create a msal confidential client application that talks only to this tenant.

        Any client secret is accepted.

        Args:
            token_cache: The cache for msal to use; msal makes an in-memory one if None.
            client_id: The application (client) id.
            client_secret: The client secret.
            **kwargs: More ``msal.ConfidentialClientApplication`` arguments.

        Returns:
            The application.
        """
        # This tenant has no regional endpoint, which recent msal would use when
        # MSAL_FORCE_REGION is set in the environment.
        kwargs.setdefault("azure_region", False)
        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=client_secret,
            authority=self.authority,
            http_client=self,
            token_cache=token_cache,
            **kwargs,
        )

    def sign_in(
        self,
        app: msal.ClientApplication,
        username: str | None = None,
        scopes: Sequence[str] = DEFAULT_SCOPES,
    ) -> dict[str, Any]:
        """Sign a user in to ``app`` with the authorization code flow.

        This is one request to the token endpoint, and msal emits no warning for it.

        Args:
            app: A msal application whose ``http_client`` is this tenant.
            username: The user; :attr:`username` if None.
            scopes: The scopes to request.

        Returns:
            msal's result, with ``"access_token"`` among others.

        Raises:
            RuntimeError: If msal returned an error.
        """
        flow = app.initiate_auth_code_flow(
            list(scopes), login_hint=username or self.username, response_mode="form_post"
        )
        result: dict[str, Any] = app.acquire_token_by_auth_code_flow(
            flow, self.authorize(flow["auth_uri"])
        )
        if "error" in result:
            raise RuntimeError(
                f"sign-in failed: {result['error']}: {result.get('error_description')}"
            )
        return result

    def _token(self, form: Mapping[str, str]) -> dict[str, object]:
        grant_type = form.get("grant_type", "")
        with self._lock:
            self._hits_by_grant[grant_type] = self._hits_by_grant.get(grant_type, 0) + 1
            failure = self._failures.pop(0) if self._failures else None
        if self.on_token_request is not None:
            self.on_token_request(dict(form))
        if self.token_delay > 0:
            time.sleep(self.token_delay)
        if failure is not None:
            raise failure
        grant = self._grants.get(grant_type)
        if grant is None:
            raise _OAuthError(
                "unsupported_grant_type", f"The grant type {grant_type!r} is not supported."
            )
        return grant(form)

    def _device_authorization(self, form: Mapping[str, str]) -> dict[str, object]:
        device_code = _Grant(
            kind="device_code",
            tenant_id=self._tenant_id,
            client_id=_require(form, "client_id"),
            # Approved at once, by whoever is the user now.
            username=self.username,
            scope=form.get("scope", ""),
            expires_at=int(time.time()) + _DEVICE_CODE_LIFETIME,
        )
        user_code = device_code.uti.replace("-", "")[:9].upper()
        return {
            "user_code": user_code,
            "device_code": _seal(dataclasses.asdict(device_code)),
            "verification_uri": _DEVICE_LOGIN_URI,
            "expires_in": _DEVICE_CODE_LIFETIME,
            "interval": 5,
            "message": (
                f"To sign in, use a web browser to open the page {_DEVICE_LOGIN_URI} "
                f"and enter the code {user_code} to authenticate."
            ),
        }

    def _device_code_grant(self, form: Mapping[str, str]) -> dict[str, object]:
        grant = self._redeem(form, "device_code")
        return self._user_tokens(form, grant.username, form.get("scope") or grant.scope)

    def _authorization_code_grant(self, form: Mapping[str, str]) -> dict[str, object]:
        grant = self._redeem(form, "code")
        if form.get("redirect_uri", "") != grant.redirect_uri:
            raise _OAuthError("invalid_grant", "The redirect_uri does not match the request.")
        if grant.code_challenge:
            # msal always uses the S256 method of PKCE (RFC 7636).
            verifier = form.get("code_verifier", "").encode()
            challenge = _b64(hashlib.sha256(verifier).digest())
            if not hmac.compare_digest(challenge.encode(), grant.code_challenge.encode()):
                raise _OAuthError(
                    "invalid_grant", "The code_verifier does not match the code_challenge."
                )
        return self._user_tokens(
            form, grant.username, form.get("scope") or grant.scope, nonce=grant.nonce
        )

    def _refresh_token_grant(self, form: Mapping[str, str]) -> dict[str, object]:
        grant = self._redeem(form, "refresh_token")
        # As Entra ID: a new refresh token and an id token come back whenever the original
        # grant had offline_access and openid, even if this request asks for neither (as
        # azure-identity's does).
        return self._user_tokens(
            form, grant.username, form.get("scope") or grant.scope, original_scope=grant.scope
        )

    def _password_grant(self, form: Mapping[str, str]) -> dict[str, object]:
        _require(form, "client_id")
        _require(form, "password")
        return self._user_tokens(form, _require(form, "username"), form.get("scope", ""))

    def _client_credentials_grant(self, form: Mapping[str, str]) -> dict[str, object]:
        client_id = _require(form, "client_id")
        if not (form.get("client_secret") or form.get("client_assertion")):
            raise _OAuthError(
                "invalid_client",
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
                status=401,
            )
        scope = _require(form, "scope")
        if not all(s.endswith("/.default") for s in scope.split()):
            raise _OAuthError(
                "invalid_scope",
                f"The provided value for scope {scope} is not valid. Client credential "
                "flows must have a scope value with /.default suffixed to the resource "
                "identifier (application ID URI).",
            )
        now = int(time.time())
        app_id = str(uuid.uuid5(_NAMESPACE, f"{self._tenant_id}/app/{client_id}"))
        access_token = self._access_token(now, client_id, app_id, {"idtyp": "app"})
        # Entra ID sends no scope, refresh token, id token or client_info here.
        return {
            "token_type": "Bearer",
            "expires_in": self.access_token_lifetime,
            "ext_expires_in": self.access_token_lifetime,
            "access_token": access_token,
        }

    def _redeem(self, form: Mapping[str, str], kind: str) -> _Grant:
        """Check the grant posted as ``kind``, which names both the parameter and the grant."""
        client_id = _require(form, "client_id")
        claims = _unseal(_require(form, kind))
        grant = _Grant.parse(claims) if claims is not None else None
        if grant is None or grant.kind != kind or grant.tenant_id != self._tenant_id:
            raise _OAuthError(
                "invalid_grant", f"The provided {kind} is malformed or was not issued here."
            )
        family = self.family_client_ids
        shared = kind == "refresh_token" and {grant.client_id, client_id} <= family
        if grant.client_id != client_id and not shared:
            raise _OAuthError("invalid_grant", f"The {kind} was issued to a different client.")
        if grant.expires_at <= time.time():
            error = "expired_token" if kind == "device_code" else "invalid_grant"
            raise _OAuthError(error, f"The {kind} has expired.")
        return grant

    def _user_tokens(
        self,
        form: Mapping[str, str],
        username: str,
        scope: str,
        nonce: str = "",
        original_scope: str = "",
    ) -> dict[str, object]:
        client_id = form["client_id"]
        requested = scope.split()
        consented = {*requested, *original_scope.split()}
        granted = " ".join(s for s in requested if s != "offline_access")
        now = int(time.time())
        oid = self._object_id(username)
        response: dict[str, object] = {
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": self.access_token_lifetime,
            "ext_expires_in": self.access_token_lifetime,
            "access_token": self._access_token(now, client_id, oid, {"scp": granted}),
        }
        if "offline_access" in consented:
            refresh_token = _Grant(
                kind="refresh_token",
                tenant_id=self._tenant_id,
                client_id=client_id,
                username=username,
                scope=" ".join(dict.fromkeys([*requested, *original_scope.split()])),
                expires_at=now + _REFRESH_TOKEN_LIFETIME,
            )
            response["refresh_token"] = _seal(dataclasses.asdict(refresh_token))
            if client_id in self.family_client_ids:
                response["foci"] = "1"  # msal stores it as the refresh token's family_id
        if "openid" in consented:
            id_token: dict[str, object] = {
                "aud": client_id,
                "iss": f"https://{_HOST}/{self._tenant_id}/v2.0",
                "iat": now,
                "nbf": now,
                "exp": now + _ID_TOKEN_LIFETIME,
                "name": username.partition("@")[0],
                "oid": oid,
                "preferred_username": username,
                "sub": str(uuid.uuid5(_NAMESPACE, f"{oid}/{client_id}")),
                "tid": self._tenant_id,
                "uti": str(uuid.uuid4()),
                "ver": "2.0",
            }
            if nonce:
                id_token["nonce"] = nonce
            response["id_token"] = _seal(id_token)
        if form.get("client_info") == "1":
            client_info = json.dumps({"uid": oid, "utid": self._tenant_id})
            response["client_info"] = _b64(client_info.encode())
        return response

    def _access_token(self, now: int, client_id: str, oid: str, extra: Mapping[str, str]) -> str:
        return _seal(
            {
                "iss": f"https://{_HOST}/{self._tenant_id}/v2.0",
                "iat": now,
                "nbf": now,
                "exp": now + self.access_token_lifetime,
                "azp": client_id,
                "oid": oid,
                "sub": oid,
                "tid": self._tenant_id,
                "uti": str(uuid.uuid4()),
                "ver": "2.0",
                **extra,
            }
        )

    def _object_id(self, username: str) -> str:
        # User principal names are case-insensitive.
        return str(uuid.uuid5(_NAMESPACE, f"{self._tenant_id}/user/{username.casefold()}"))

    def _openid_configuration(self) -> dict[str, object]:
        base = f"https://{_HOST}/{self._tenant_id}"
        return {
            "issuer": f"{base}/v2.0",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "cloud_instance_name": "microsoftonline.com",
        }

    def _instance_metadata(self) -> dict[str, object]:
        return {
            "tenant_discovery_endpoint": (
                f"https://{_HOST}/{self._tenant_id}/v2.0/.well-known/openid-configuration"
            ),
            "api-version": "1.1",
            "metadata": [
                {
                    "preferred_network": _HOST,
                    "preferred_cache": "login.windows.net",
                    "aliases": list(_WORLDWIDE_ALIASES),
                }
            ],
        }


def _user_realm(username: str) -> dict[str, object]:
    # Managed, so msal's password grant posts to the token endpoint, not to WS-Trust.
    return {
        "ver": "1.0",
        "account_type": "Managed",
        "domain_name": username.rpartition("@")[2],
        "cloud_instance_name": "microsoftonline.com",
        "cloud_audience_urn": "urn:federation:MicrosoftOnline",
    }


def _path(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.netloc != _HOST:
        return None
    return parts.path


def _form(data: Mapping[str, Any] | str | None) -> dict[str, str]:
    if data is None:
        return {}
    if isinstance(data, str):
        return dict(parse_qsl(data))
    # msal posts some values as ints and unset ones as None.
    return {
        str(k): v.decode() if isinstance(v, bytes) else str(v)
        for k, v in data.items()
        if v is not None
    }


def _require(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise _OAuthError(
            "invalid_request", f"The request body must contain the following parameter: '{name}'."
        )
    return value


def _json(status_code: int, body: Mapping[str, object]) -> LocalResponse:
    return LocalResponse(status_code, json.dumps(body))


def _not_found(method: str, url: str) -> LocalResponse:
    return _json(
        404,
        {
            "error": "not_found",
            "error_description": f"LocalAuthority does not serve {method} {url}",
        },
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac(signing_input: str) -> str:
    return _b64(hmac.new(_KEY, signing_input.encode("ascii"), hashlib.sha256).digest())


def _seal(claims: Mapping[str, object]) -> str:
    """Sign claims into a compact JWS (JWT), the shape of every token issued here."""
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{payload}.{_mac(f'{header}.{payload}')}"


def _unseal(token: str) -> dict[str, object] | None:
    """Return the claims of a token :func:`_seal` made, or None for anything else."""
    if not token.isascii() or token.count(".") != 2:
        return None
    header, payload, signature = token.split(".")
    if not hmac.compare_digest(signature.encode(), _mac(f"{header}.{payload}").encode()):
        return None
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims if isinstance(claims, dict) else None
