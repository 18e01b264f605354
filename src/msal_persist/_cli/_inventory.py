"""A cache document summarised for people: accounts, their tokens, apps, other sections.

Only a whitelist of fields is ever taken from an entry: a secret, and anything a peer may
add, never leaves the file. Caches written by other tools may hold numbers or nulls where
msal writes text, so every field is read through :func:`text`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from msal_persist._codec import Decoded
from msal_persist._errors import DecryptionError
from msal_persist._schema import (
    ACCESS_TOKEN,
    ACCOUNT,
    APP_METADATA,
    ID_TOKEN,
    REFRESH_TOKEN,
    SECTIONS,
    TOKEN_SECTIONS,
)
from msal_persist._settle import Reading

from ._base import plural

__all__ = [
    "ENTRY_NAMES",
    "AccountView",
    "Inventory",
    "describe_accounts",
    "entries",
    "inventory",
    "left_out",
    "matching_accounts",
    "text",
    "what_clear_deletes",
]

ENTRY_NAMES: Final = {
    ACCESS_TOKEN: "access token",
    REFRESH_TOKEN: "refresh token",
    ID_TOKEN: "ID token",
    ACCOUNT: "account entry",
}
"""What people call an entry of each account section."""

_LEFT_OUT_REASONS: Final = 5


def text(value: object) -> str | None:
    """A field as text: caches written by other tools may hold numbers or nulls anywhere."""
    if value is None or isinstance(value, (dict, list)):
        return None
    return value if isinstance(value, str) else str(value)


def _timestamp(value: object) -> int | None:
    """A Unix time as msal stores it (a string of digits); ``None`` if absent or garbled."""
    try:
        return int(float(str(value)))
    except (ValueError, OverflowError):
        return None


def entries(state: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    """The entries of ``section`` (none if it is absent)."""
    found = state.get(section)
    return list(found.values()) if isinstance(found, dict) else []


def _home_id(entry: Mapping[str, Any]) -> str:
    return (text(entry.get("home_account_id")) or "").casefold()


def left_out(decoded: Decoded) -> str:
    """How many entries a cache leaves out and why, on one line (the same reasons counted)."""
    counts: dict[str, int] = {}
    for problem in decoded.problems:
        counts[problem] = counts.get(problem, 0) + 1
    reasons = [f"{p} ({n} times)" if n > 1 else p for p, n in counts.items()]
    if len(reasons) > _LEFT_OUT_REASONS:
        more = len(reasons) - _LEFT_OUT_REASONS
        reasons[_LEFT_OUT_REASONS:] = [f"and {plural(more, 'other reason')}"]
    return f"{plural(decoded.rejected, 'entry')} msal cannot use: {'; '.join(reasons)}"


def matching_accounts(state: Mapping[str, Any], wanted: str) -> set[str]:
    """Home account ids (case-folded) of accounts whose username or home account id match."""
    key = wanted.strip().casefold()
    matches = set()
    for entry in entries(state, ACCOUNT):
        username = (text(entry.get("username")) or "").casefold()
        if key and key in {username, _home_id(entry)}:
            matches.add(_home_id(entry))
    for section in TOKEN_SECTIONS:
        for entry in entries(state, section):
            if key and _home_id(entry) == key:
                matches.add(key)
    return matches


def describe_accounts(state: Mapping[str, Any], home_ids: set[str]) -> str:
    """Name the accounts ``home_ids``: their usernames and home account ids."""
    names = []
    for home_id in sorted(home_ids):
        usernames = sorted(
            {
                text(e.get("username")) or ""
                for e in entries(state, ACCOUNT)
                if _home_id(e) == home_id
            }
            - {""}
        )
        label = ", ".join(usernames) or "an account with no username"
        names.append(f"{label} (home account id {home_id})")
    return " and ".join(names)


@dataclass
class AccountView:
    """What ``show`` tells about one account: everything but secrets."""

    home_account_id: str
    usernames: list[str] = field(default_factory=list)
    sign_ins: list[dict[str, str | None]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The account as ``show --json`` prints it."""
        return {
            "home_account_id": self.home_account_id,
            "username": self.usernames[0] if self.usernames else None,
            "sign_ins": self.sign_ins,
            "tokens": self.tokens,
        }


@dataclass(frozen=True)
class Inventory:
    """A cache document summarised: accounts with their tokens, apps, foreign sections."""

    accounts: list[AccountView]
    apps: list[dict[str, str | None]]
    other_sections: dict[str, int]

    @property
    def token_count(self) -> int:
        """How many tokens all accounts hold."""
        return sum(len(account.tokens) for account in self.accounts)

    @property
    def expired_count(self) -> int:
        """How many tokens have expired."""
        return sum(t["expired"] is True for account in self.accounts for t in account.tokens)

    def describe(self) -> str:
        """``"2 accounts, 9 tokens, 2 apps"``."""
        return (
            f"{plural(len(self.accounts), 'account')}, {plural(self.token_count, 'token')}, "
            f"{plural(len(self.apps), 'app')}"
        )


def inventory(state: Mapping[str, Any], now: float) -> Inventory:
    """Summarise the document ``state`` as of the Unix time ``now``."""
    accounts: dict[str, AccountView] = {}

    def view_of(entry: Mapping[str, Any]) -> AccountView:
        raw = text(entry.get("home_account_id")) or ""
        return accounts.setdefault(raw.casefold(), AccountView(raw))

    for entry in entries(state, ACCOUNT):
        view = view_of(entry)
        username = text(entry.get("username"))
        if username and username not in view.usernames:
            view.usernames.append(username)
        view.sign_ins.append(
            {
                name: text(entry.get(name))
                for name in ("environment", "realm", "account_source", "authority_type")
            }
        )
    for section in TOKEN_SECTIONS:
        for entry in entries(state, section):
            view_of(entry).tokens.append(_token_view(section, entry, now))
    order = {section: index for index, section in enumerate(TOKEN_SECTIONS)}
    for view in accounts.values():
        view.tokens.sort(
            key=lambda t: (order[t["type"]], t["client_id"] or "", t.get("target") or "")
        )
    apps = [
        {name: text(entry.get(name)) for name in ("client_id", "environment", "family_id")}
        for entry in entries(state, APP_METADATA)
    ]
    other = {
        name: len(value) if isinstance(value, (dict, list)) else 1
        for name, value in state.items()
        if name not in SECTIONS
    }
    ordered = sorted(
        accounts.values(), key=lambda a: (not a.usernames, a.usernames[:1], a.home_account_id)
    )
    return Inventory(ordered, apps, other)


def _token_view(section: str, entry: Mapping[str, Any], now: float) -> dict[str, Any]:
    # A whitelist of fields: "secret", and anything a peer may add, never leaves the file.
    view: dict[str, Any] = {
        "type": section,
        "client_id": text(entry.get("client_id")),
        "environment": text(entry.get("environment")),
        "realm": text(entry.get("realm")),
    }
    if section != ID_TOKEN:
        view["target"] = text(entry.get("target"))
    if section == REFRESH_TOKEN:
        view["family_id"] = text(entry.get("family_id"))
        updated = _timestamp(entry.get("last_modification_time"))
        view["updated_ago"] = None if updated is None else max(0, int(now - updated))
    expires_on = _timestamp(entry.get("expires_on"))
    view["expires_on"] = expires_on
    view["expires_in"] = None if expires_on is None else int(expires_on - now)
    view["expired"] = None if expires_on is None else expires_on <= now
    return view


def what_clear_deletes(read: Callable[[], Reading], thing: str) -> str:
    """What ``clear`` deletes, in words, from a lock-free read of the cache (the ``thing``).

    Every token when the content is a cache; the ``thing`` itself when it is encrypted
    under a key not given (clearing needs none: a cache whose key is lost can still be
    started over) or is no cache at all.
    """
    try:
        reading = read()
    except DecryptionError as error:
        return f"the {thing} (encrypted with key {error.key_id}, not opened)"
    if reading.decoded is None:
        return f"the {thing} (it is not a valid token cache: {reading.problem})"
    return f"every token ({inventory(reading.decoded.state, time.time()).describe()})"
