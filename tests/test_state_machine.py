"""A Hypothesis state machine: PersistedTokenCache agrees with msal's in-memory cache."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from msal_persist import PersistedTokenCache

USERS = st.integers(min_value=0, max_value=4)
TENANT = "00000000-0000-4000-8000-00000000a11e"
TYPES = ("AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata")


def _b64(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()


def _event(user: int, grant_type: str = "password", *, with_refresh_token: bool = True) -> dict:
    uid = f"0000000{user}-0000-4000-8000-000000000000"
    now = int(time.time())
    claims = {
        "aud": "client",
        "iat": now,
        "nbf": now - 60,
        "exp": now + 3600,
        "iss": f"https://login.microsoftonline.com/{TENANT}/v2.0",
        "oid": uid,
        "sub": uid,
        "tid": TENANT,
        "preferred_username": f"u{user}@example.test",
    }
    response = {
        "access_token": f"at-{uuid.uuid4()}",
        "expires_in": 3600,
        "token_type": "Bearer",
        "client_info": _b64({"uid": uid, "utid": TENANT}),
        "id_token": f"{_b64({'alg': 'none'})}.{_b64(claims)}.",
    }
    if with_refresh_token:
        response["refresh_token"] = f"rt-{uuid.uuid4()}"
    return {
        "client_id": "client",
        "scope": ["User.Read"],
        "token_endpoint": f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token",
        "environment": "login.microsoftonline.com",
        "grant_type": grant_type,
        "response": response,
        "data": {},
    }


class CacheAgreesWithMemory(RuleBasedStateMachine):
    """Drive both caches with the same msal operations; they must always hold the same."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp())
        self.path = self.directory / "cache.json"
        self.persisted = PersistedTokenCache(self.path, fsync=False)
        self.memory = msal.SerializableTokenCache()

    def teardown(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _both(self, operation: Any) -> None:
        operation(self.persisted)
        operation(self.memory)

    @rule(user=USERS)
    def sign_in(self, user: int) -> None:
        event, now = _event(user), int(time.time())
        self._both(lambda cache: cache.add(json.loads(json.dumps(event)), now=now))

    @rule(user=USERS)
    def refresh(self, user: int) -> None:
        """Msal's refresh: add() without the new refresh token, then update_rt()."""
        event = _event(user, "refresh_token", with_refresh_token=False)
        new_rt, now = f"rt-{uuid.uuid4()}", int(time.time())

        def refresh(cache: msal.SerializableTokenCache) -> None:
            query = {"home_account_id": f"0000000{user}-0000-4000-8000-000000000000.{TENANT}"}
            old = list(cache.search("RefreshToken", query=query))
            cache.add(json.loads(json.dumps(event)), now=now)
            if old:
                # What msal's update_rt() does, with the clock pinned so both caches agree.
                update = {"secret": new_rt, "last_modification_time": str(now)}
                cache.modify("RefreshToken", old[0], update)

        self._both(refresh)

    @rule(user=USERS)
    def remove_account(self, user: int) -> None:
        home = f"0000000{user}-0000-4000-8000-000000000000.{TENANT}"

        def remove(cache: msal.SerializableTokenCache) -> None:
            for kind, remover in (
                ("RefreshToken", cache.remove_rt),
                ("AccessToken", cache.remove_at),
                ("IdToken", cache.remove_idt),
                ("Account", cache.remove_account),
            ):
                for entry in list(cache.search(kind, query={"home_account_id": home})):
                    remover(entry)

        self._both(remove)

    @rule(user=USERS)
    def another_process_signs_in(self, user: int) -> None:
        """A second instance on the same file writes; the first must pick it up."""
        event, now = _event(user), int(time.time())
        PersistedTokenCache(self.path, fsync=False).add(json.loads(json.dumps(event)), now=now)
        self.memory.add(json.loads(json.dumps(event)), now=now)

    @rule()
    def someone_deletes_the_file(self) -> None:
        self.path.unlink(missing_ok=True)
        self.memory.deserialize("{}")

    @invariant()
    def same_entries(self) -> None:
        for kind in TYPES:
            persisted = sorted(map(json.dumps, self.persisted.search(kind)))
            memory = sorted(map(json.dumps, self.memory.search(kind)))
            assert persisted == memory, kind

    @invariant()
    def file_matches_instance(self) -> None:
        # serialize() first: it writes anything still queued (a refresh whose update_rt
        # never came), after which the file must hold exactly what the instance holds.
        in_memory = json.loads(self.persisted.serialize())
        if self.path.exists():
            assert json.loads(self.path.read_bytes()) == in_memory
        else:
            assert not any(in_memory.values())


CacheAgreesWithMemory.TestCase.settings = settings(
    max_examples=60, stateful_step_count=20, deadline=None
)
test_cache_agrees_with_memory = CacheAgreesWithMemory.TestCase
