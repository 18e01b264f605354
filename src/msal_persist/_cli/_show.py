"""``path`` and ``show``: where the cache lives and why, and what it holds (never a secret)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

from msal_persist._locations import ENV_VAR
from msal_persist._schema import ACCESS_TOKEN, ID_TOKEN

from . import _redis
from ._base import (
    AddCommand,
    ExitCode,
    add_app_option,
    add_path_argument,
    duration,
    plural,
    resolve,
    say,
    size,
)
from ._inventory import ENTRY_NAMES, AccountView, inventory, left_out
from ._read import codec_from, read_document

__all__ = ["add_commands"]

_RULES: Final = (
    ("explicit", "a path given by the caller"),
    ("environment", f"${ENV_VAR}"),
    ("xdg-runtime-dir", "$XDG_RUNTIME_DIR/<app>/token_cache.json"),
    ("user-cache-dir", "the user cache directory"),
)
_MSAL_RENEWAL_SECONDS: Final = 300
"""msal treats an access token with less than this left as expired and refreshes it."""


def add_commands(add: AddCommand) -> None:
    """Add ``path`` and ``show``."""
    path = add(
        "path",
        summary="where the default cache lives and why",
        description="Show the default cache path, the rule that chose it and why others did not.",
        handler=_cmd_path,
    )
    add_app_option(path)
    show = add(
        "show",
        summary="list accounts and tokens (never a secret)",
        description="List the accounts and tokens in a cache; secrets are never shown.",
        handler=_cmd_show,
    )
    add_path_argument(show)
    _redis.add_redis_options(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of text")


def _cmd_path(args: argparse.Namespace) -> int:
    location = resolve(None, args.app)
    number = next(i for i, (rule, _) in enumerate(_RULES, 1) if rule == location.rule)
    say(str(location.path), f"  chosen by rule {number} ({location.rule}): {_RULES[number - 1][1]}")
    for index, reason in enumerate(location.reasons, 1):
        say(f"  rule {index} ({_RULES[index - 1][0]}) did not apply: {reason}")
    if location.persistent:
        say("  persists across reboots: yes")
    else:
        say("  persists across reboots: no (a tmpfs, wiped when your last session ends)")
    try:
        st = os.stat(location.path)
    except OSError:
        say("  file: does not exist yet")
    else:
        say(f"  file: exists, {size(st.st_size)}")
    return ExitCode.OK


def _cmd_show(args: argparse.Namespace) -> int:
    # What msal can use, as PersistedTokenCache hands it: bad entries are left out and told.
    if _redis.requested(args):
        path, decoded = _redis.read(args)
    else:
        location = resolve(args.path, args.app).path
        path, decoded = str(location), read_document(location, codec_from(args.key))
    contents = inventory(decoded.state, time.time())
    if args.json:
        document = {
            "cache": path,
            "accounts": [account.as_json() for account in contents.accounts],
            "apps": contents.apps,
            "other_sections": contents.other_sections,
            "left_out": {"count": decoded.rejected, "problems": list(decoded.problems)},
        }
        say(*json.dumps(document, indent=2).splitlines())  # escaped already: one per line
        return ExitCode.OK
    say(f"cache: {path}", f"  {contents.describe()}")
    if decoded.rejected:
        say(f"  left out: {left_out(decoded)}")
    for account in contents.accounts:
        say("", *_account_lines(account))
    if contents.apps:
        say("", "apps:")
        for app in contents.apps:
            family = f" (family {app['family_id']})" if app.get("family_id") else ""
            say(f"  {app['client_id']} at {app['environment']}{family}")
    if contents.other_sections:
        others = ", ".join(
            f"{name} ({plural(count, 'entry')})"
            for name, count in sorted(contents.other_sections.items())
        )
        say("", f"other sections (kept as they are): {others}")
    return ExitCode.OK


def _account_lines(account: AccountView) -> Iterator[str]:
    yield ", ".join(account.usernames) or "(no account entry)"
    yield f"  home account id: {account.home_account_id or '(none)'}"
    for sign_in in account.sign_ins:
        source = sign_in["account_source"]
        how = f", via {source.rpartition(':')[2]}" if source else ""
        yield f"  signed in at {sign_in['environment']}, tenant {sign_in['realm']}{how}"
    for token in account.tokens:
        yield "  " + _token_line(token)


def _token_line(token: Mapping[str, Any]) -> str:
    parts = [f"{ENTRY_NAMES[token['type']]:<13}", f"client {token['client_id']}"]
    if token.get("target"):
        parts.append(f"scopes {token['target']}")
    if token["type"] == ID_TOKEN:
        parts.append(f"tenant {token['realm']}")
    if token.get("family_id"):
        parts.append(f"family {token['family_id']}")
    if token["expires_in"] is None:
        if token.get("updated_ago") is not None:
            parts.append(f"last updated {duration(token['updated_ago'])} ago")
    elif token["expired"]:
        parts.append(f"expired {duration(token['expires_in'])} ago")
    elif token["type"] == ACCESS_TOKEN and token["expires_in"] < _MSAL_RENEWAL_SECONDS:
        parts.append(f"expires in {duration(token['expires_in'])} (renewed at next use)")
    else:
        parts.append(f"expires in {duration(token['expires_in'])}")
    return "  ".join(parts)
