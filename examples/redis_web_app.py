"""A web app on two replicas sharing its token cache in Redis: one key per user, one for the app.

The pattern Microsoft.Identity.Web uses: each request builds a confidential client whose
cache is the signed-in user's own partition (their home account id), and app-only tokens
(client credentials) live under ``<client id>_<tenant>_AppTokenCache``. Unlike its
in-memory L1, the local copy here stays coherent: a token refreshed on one replica (after a
step-up, say) is what the other replica's next request uses.

Set ``REDIS_URL`` to use your server; without it this script starts a private
``redis-server`` (from the ``redis-server`` package) and stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import msal

from msal_persist import PersistedTokenCache, RedisPartitions
from msal_persist.testing import DEFAULT_CLIENT_ID, DEFAULT_SCOPES, LocalAuthority

APP_SCOPES = ["https://graph.microsoft.com/.default"]


@contextmanager
def redis_url() -> Iterator[str]:
    """``$REDIS_URL``, or a private redis-server on a free port for the script's lifetime."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    program = shutil.which("redis-server")
    if program is None:
        sys.exit("set REDIS_URL, or install redis-server (sudo apt-get install redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        command = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", directory, "--logfile", ""]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603 - our argv
        try:
            for _ in range(500):
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(timeout=10)


class Replica:
    """One instance of the web app: its own Redis client, as on another machine."""

    def __init__(self, name: str, url: str, authority: LocalAuthority) -> None:
        self.name = name
        self.authority = authority
        self.partitions = RedisPartitions(url, prefix="webapp:")

    def _app(self, cache: msal.TokenCache) -> msal.ConfidentialClientApplication:
        return self.authority.confidential_client(token_cache=cache)

    def sign_in(self, username: str) -> str:
        """The redirect after sign-in: redeem the code, keep the tokens in the user's key."""
        # Whose partition it is is known only from the answer, so redeem with a scratch
        # cache and then make it the user's partition (a fresh sign-in starts it over).
        scratch = msal.SerializableTokenCache()
        result = self.authority.sign_in(self._app(scratch), username)
        claims = result["id_token_claims"]
        home_account_id = f"{claims['oid']}.{claims['tid']}"
        PersistedTokenCache(store=self.partitions.for_user(home_account_id)).deserialize(
            scratch.serialize()
        )
        return home_account_id  # what the app keeps in the user's session

    def call_api(self, home_account_id: str, *, step_up: bool = False) -> str:
        """A request of the signed-in user: a token from their own partition only."""
        cache = PersistedTokenCache(store=self.partitions.for_user(home_account_id))
        app = self._app(cache)
        (account,) = app.get_accounts()
        result = app.acquire_token_silent(DEFAULT_SCOPES, account, force_refresh=step_up)
        print(f"{self.name}: user token from {result['token_source']}")
        return str(result["access_token"])

    def app_token(self) -> str:
        """A background job: the app's own token, shared by every replica."""
        store = self.partitions.for_app(DEFAULT_CLIENT_ID, self.authority.tenant_id)
        result = self._app(PersistedTokenCache(store=store)).acquire_token_for_client(APP_SCOPES)
        print(f"{self.name}: app token from {result['token_source']}")
        return str(result["access_token"])


def main() -> None:
    authority = LocalAuthority()
    with redis_url() as url:
        first, second = Replica("replica 1", url, authority), Replica("replica 2", url, authority)
        ada = first.sign_in("ada@example.test")
        bob = second.sign_in("bob@example.test")
        old = second.call_api(ada)  # ada's next request lands on the other replica
        assert second.call_api(ada) == old  # and again: a cache hit, served locally
        new = first.call_api(ada, step_up=True)  # a refresh on replica 1 ...
        assert second.call_api(ada) == new != old  # ... is what replica 2 uses next
        assert first.call_api(bob) != new  # bob's tokens are in bob's partition
        assert first.app_token() == second.app_token()  # one app token for the whole farm
        assert authority.hits_by_grant == {
            "authorization_code": 2,
            "refresh_token": 1,
            "client_credentials": 1,
        }
    print("every replica saw the same tokens; one request per token at the authority")


if __name__ == "__main__":
    main()
