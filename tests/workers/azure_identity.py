"""azure-identity peers (tests_interop/): ``python -m workers.azure_identity COMMAND ARGS...``.

Unchanged azure-identity credentials, reading and writing the shared cache exactly as they
do for a user (``~/.IdentityService/msal.cache.nocae`` through msal-extensions, plaintext
since no libsecret is present), with one substitution: azure-core's transport talks to
``msal_persist.testing.LocalAuthority`` instead of the network. Each command prints one
JSON line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from azure.core.pipeline.transport import HttpResponse, HttpTransport
from azure.identity import SharedTokenCacheCredential

from msal_persist.testing import LocalAuthority, LocalResponse
from workers import main, wait_for_barrier


class LocalTransport(HttpTransport):  # type: ignore[misc]
    """azure-core's transport, answered by a LocalAuthority (a POST or a GET, form bodies)."""

    def __init__(self, authority: LocalAuthority) -> None:
        self.authority = authority

    def __enter__(self) -> LocalTransport:
        """Nothing to open."""
        return self

    def __exit__(self, *_exc: object) -> None:
        """Nothing to close."""

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request: Any, **_kwargs: Any) -> HttpResponse:
        headers = dict(request.headers)
        if request.method == "POST":
            data = getattr(request, "data", None)
            if not isinstance(data, dict):
                body = request.body if hasattr(request, "body") else request.content
                data = body.decode() if isinstance(body, bytes) else body
            answer = self.authority.post(request.url, data=data, headers=headers)
        else:
            answer = self.authority.get(request.url, headers=headers)
        return _Response(request, answer)


class _Response(HttpResponse):  # type: ignore[misc]
    def __init__(self, request: Any, answer: LocalResponse) -> None:
        super().__init__(request, answer)
        self.status_code = answer.status_code
        self.headers = dict(answer.headers)
        self.reason = "OK" if answer.status_code < 400 else "Error"
        self.content_type = self.headers.get("Content-Type", "application/json")
        self._body = answer.text.encode()

    def body(self) -> bytes:
        return self._body

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode(encoding or "utf-8")

    def stream_download(self, *_args: Any, **_kwargs: Any) -> Iterator[bytes]:
        yield self._body


def _credential(username: str, authority: LocalAuthority) -> SharedTokenCacheCredential:
    return SharedTokenCacheCredential(
        username=username, tenant_id=authority.tenant_id, transport=LocalTransport(authority)
    )


def get_token(username: str, scope: str, lifetime: str = "3600") -> None:
    """One ``get_token``: the token, and whether the token endpoint was reached."""
    authority = LocalAuthority(access_token_lifetime=int(lifetime))
    token = _credential(username, authority).get_token(scope)
    print(json.dumps({"token": token.token, "hits": authority.token_endpoint_hits}))


def refresher(username: str, scope: str, rounds: str, barrier: str, parties: str) -> None:
    """Refresh ``rounds`` times (tokens live 60 s, which azure-identity treats as expired)."""
    authority = LocalAuthority(access_token_lifetime=60)
    credential = _credential(username, authority)
    wait_for_barrier(barrier, parties)
    tokens = [credential.get_token(scope).token for _ in range(int(rounds))]
    print(
        json.dumps(
            {"username": username, "last": tokens[-1], "hits": authority.token_endpoint_hits}
        )
    )


COMMANDS = {"get_token": get_token, "refresher": refresher}

if __name__ == "__main__":
    main(COMMANDS)
