"""What an msal token cache document is: its sections and, field by field, its entries.

:func:`judge` decides what of a decoded document msal may see. It checks every entry of
msal's five sections against what msal for Python reads (:data:`_RULES`), so that no code
path of msal raises on what it is given, and keeps only what strict JSON can carry back
(RFC 8259: no ``NaN``, no ``Infinity``, nesting no deeper than :data:`MAX_DEPTH`). Whatever
it leaves out, one entry or one section of another tool at a time, it counts and describes
without quoting the file.

The literals ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, but Python's own
``json.dumps`` writes them, so a Python peer that read a ``1e999`` writes ``Infinity``
back. They are judged where they stand, exactly like ``1e999``: the entry or the section of
another tool holding one is left out, and the rest of the document is kept.

This module knows nothing of bytes: :mod:`~msal_persist._codec` turns bytes into the values
judged here and back.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final, Literal

__all__ = [
    "ACCESS_TOKEN",
    "ACCOUNT",
    "ACCOUNT_SECTIONS",
    "APP_METADATA",
    "ID_TOKEN",
    "MAX_DEPTH",
    "OVERLONG",
    "REFRESH_TOKEN",
    "SECTIONS",
    "TOKEN_SECTIONS",
    "Decoded",
    "InexactError",
    "NotACacheError",
    "Overlong",
    "checked_shape",
    "judge",
]

ACCESS_TOKEN: Final = "AccessToken"  # noqa: S105 - section names, not secrets
REFRESH_TOKEN: Final = "RefreshToken"  # noqa: S105
ID_TOKEN: Final = "IdToken"  # noqa: S105
ACCOUNT: Final = "Account"
APP_METADATA: Final = "AppMetadata"

TOKEN_SECTIONS: Final = (ACCESS_TOKEN, REFRESH_TOKEN, ID_TOKEN)
"""The sections holding tokens, in the order they are listed to people."""
ACCOUNT_SECTIONS: Final = (ACCOUNT, *TOKEN_SECTIONS)
"""The sections whose entries belong to one account, named by their ``home_account_id``."""
SECTIONS: Final = frozenset({*ACCOUNT_SECTIONS, APP_METADATA})
"""The sections msal for Python indexes into; others (from other SDKs) are kept untouched."""

MAX_DEPTH: Final = 64
"""The deepest nesting kept, the document itself counting as one level.

Far more than any SDK writes (msal's own documents are 3 deep), the default limit of .NET's
JSON readers, and far below what orjson (255) and the stdlib's C encoder (Python's recursion
limit, shared with the caller's own stack) can encode: what is kept can always be written."""


class NotACacheError(ValueError):
    """The bytes are not an msal cache document. The message never quotes the content."""


@dataclass(frozen=True)
class Decoded:
    """A cache document as msal may see it, and what was left out of it.

    Attributes:
        state: Every usable entry of msal's five sections, and every section of other
            tools that can be written back in strict JSON: what msal may see, and what
            :func:`encode_document` writes back exactly.
        rejected: How many entries and sections were left out of ``state``.
        problems: One short line per entry or section left out: the section, the field
            and why. Never a cache key, a secret, a username or other content of the file.
    """

    state: dict[str, Any]
    rejected: int
    problems: tuple[str, ...]


class Overlong:
    """Stands for an integer literal too long for ``int()``, until its entry is left out."""


OVERLONG: Final = Overlong()


class InexactError(Exception):
    """orjson turned an integer literal into a float: decode again with the stdlib."""


def checked_shape(state: Any) -> dict[str, Any]:
    if not isinstance(state, dict):
        kind = "int" if state is OVERLONG else type(state).__name__
        raise NotACacheError(f"a JSON {kind}, not an object")
    for section in sorted(SECTIONS.intersection(state)):
        entries = state[section]
        if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
            raise NotACacheError(f"section {section} is not a mapping of entries")
    return state


# What msal for Python (1.29 to 1.39) reads in each entry, field by field, and the msal code
# that needs it, so that no msal code path raises on an entry it is given. A field msal
# reads with entry[...] or asserts is required; one it reads with .get() may be absent but,
# when present, must be of a type msal can use:
# - "text or null": msal's key makers build cache keys with "-".join([value or "", ...]),
#   which raises on a number, a list or an object;
# - "whole number": what int() takes and what the other SDKs parse: text of ASCII digits
#   (as msal writes it), a JSON integer or a whole finite float, within 64 bits;
# - "the section's name": the credential_type msal's remove_*() and update_rt() assert.
# Fields not listed are not read by msal; they are kept if they are strict JSON.
_Kind = Literal["the section's name", "text", "text or null", "whole number"]


@dataclass(frozen=True)
class _Field:
    kind: _Kind
    required: bool = False


_CREDENTIAL_TYPE: Final = _Field("the section's name", required=True)
_KEY_PART: Final = _Field("text or null")

_RULES: Final[Mapping[str, Mapping[str, _Field]]] = {
    ACCESS_TOKEN: {
        # token_cache.py remove_at() asserts it, and search() calls remove_at() for every
        # expired access token in the section, whoever it belongs to.
        "credential_type": _CREDENTIAL_TYPE,
        # application.py returns entry["secret"] as the token on a cache hit;
        # managed_identity.py also calls .encode() on it.
        "secret": _Field("text", required=True),
        # search() compares int(entry["expires_on"]) with now for every entry of the
        # section; application.py subtracts a float time from it.
        "expires_on": _Field("whole number", required=True),
        # application.py and managed_identity.py: int(entry["refresh_on"]) on a cache hit.
        "refresh_on": _Field("whole number"),
        # _is_matching() (1.39) and search() (1.29): entry.get("target", "").split().
        "target": _Field("text"),
        # application.py hands entry.get("token_type", "Bearer") to the caller.
        "token_type": _Field("text"),
        # The access token key maker, called by remove_at() and modify().
        "home_account_id": _KEY_PART,
        "environment": _KEY_PART,
        "client_id": _KEY_PART,
        "realm": _KEY_PART,
        "ext_cache_key": _KEY_PART,
    },
    REFRESH_TOKEN: {
        # update_rt() (after every refresh that returns a new one) and remove_rt() assert it.
        "credential_type": _CREDENTIAL_TYPE,
        # oauth2cli's obtain_token_by_refresh_token() asserts token_item["secret"] is a str.
        "secret": _Field("text", required=True),
        # application.py _sign_out() (remove_account) reads rt["client_id"].
        "client_id": _Field("text or null", required=True),
        # application.py sorts candidates by int(e.get("last_modification_time", "0")).
        "last_modification_time": _Field("whole number"),
        # Compared with AppMetadata's family_id to pick a family refresh token.
        "family_id": _Field("text or null"),
        # The refresh token key maker, called by update_rt() and remove_rt(); msal notes
        # that other SDKs may write a null target.
        "home_account_id": _KEY_PART,
        "environment": _KEY_PART,
        "target": _KEY_PART,
    },
    ID_TOKEN: {
        # remove_idt() asserts it (remove_account).
        "credential_type": _CREDENTIAL_TYPE,
        # Not read by msal for Python, but required by the schema and read by the SDKs
        # that return ID token claims from the cache.
        "secret": _Field("text", required=True),
        # The ID token key maker, called by remove_idt().
        "home_account_id": _KEY_PART,
        "environment": _KEY_PART,
        "client_id": _KEY_PART,
        "realm": _KEY_PART,
    },
    ACCOUNT: {
        # application.py _find_msal_accounts() reads a["authority_type"] (get_accounts);
        # remove_account() asserts it is there.
        "authority_type": _Field("text", required=True),
        # get_accounts(username=...) calls a["username"].lower() (msal writes "" if unknown).
        "username": _Field("text", required=True),
        # get_accounts() groups accounts by it, acquire_token_silent() sends it as a routing
        # header with .replace(), and the account key maker (remove_account) joins it.
        "home_account_id": _KEY_PART,
        "environment": _KEY_PART,
        "realm": _KEY_PART,
        # Handed to the broker as the account id.
        "local_account_id": _Field("text or null"),
        # Compared with the broker's grant type.
        "account_source": _Field("text or null"),
    },
    APP_METADATA: {
        # application.py passes app_metadata["family_id"] to the refresh token search.
        "family_id": _Field("text or null"),
    },
}


@dataclass(frozen=True)
class _FastPlan:
    """A section's rules as checks that run in C loops over all of its entries at once."""

    required: tuple[str, ...]
    optional_numbers: tuple[str, ...]
    optional_text: tuple[str, ...]  # text, never null
    named: tuple[str, ...]  # must equal the section's name
    not_null: tuple[str, ...]
    numbers: tuple[str, ...]
    row: Callable[[dict[str, Any]], tuple[Any, ...]]  # the required fields; KeyError if absent


def _plan(fields: Mapping[str, _Field]) -> _FastPlan:
    def names(*kinds: _Kind, required: bool | None = None) -> tuple[str, ...]:
        return tuple(
            name
            for name, field in fields.items()
            if field.kind in kinds and required in {None, field.required}
        )

    required = tuple(name for name, field in fields.items() if field.required)

    def row(entry: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(entry[name] for name in required)

    return _FastPlan(
        required=required,
        optional_numbers=names("whole number", required=False),
        optional_text=names("text", required=False),
        named=names("the section's name"),
        not_null=names("the section's name", "text", "whole number"),
        numbers=names("whole number"),
        # itemgetter builds the same tuple in C, when it returns a tuple (two names or more).
        row=operator.itemgetter(*required) if len(required) > 1 else row,
    )


_PLANS: Final = {section: _plan(fields) for section, fields in _RULES.items()}
_TEXT_OR_NULL: Final = frozenset({str, type(None)})
_NUMBER_DIGITS: Final = 18  # at most 18 decimal digits: always below 2**63
_INT64: Final = 2**63
_WHOLE_NUMBER: Final = re.compile(r"-?[0-9]+")
_PLAIN_NAME: Final = re.compile(r"[A-Za-z_]{1,40}")


def judge(state: dict[str, Any], *, exact: bool) -> Decoded:
    kept: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in state.items():
        if name not in _RULES:
            problem = _json_problem(value, 1, exact=exact)
            if problem is None:
                kept[name] = value
            else:
                label = f'section "{name}"' if _PLAIN_NAME.fullmatch(name) else "a section"
                problems.append(f"{label} of another tool: {problem}")
        elif _all_plain(name, value):
            kept[name] = value
        else:
            entries = {}
            for key, entry in value.items():
                problem = _entry_problem(name, entry, exact=exact)
                if problem is None:
                    entries[key] = entry
                else:
                    problems.append(f"{name} entry: {problem}")
            kept[name] = entries
    return Decoded(kept, len(problems), tuple(problems))


def _all_plain(section: str, entries: dict[str, dict[str, Any]]) -> bool:
    """Whether every entry of a section passes at a glance: the common case, kept cheap.

    At a glance means every value is text or null, the required fields are there, the
    credential type is the section's, text is not null and whole numbers are plain
    digits. Anything else is judged entry by entry.
    """
    values = entries.values()
    types = {*map(type, chain.from_iterable(map(dict.values, values)))}
    if not values or not types <= _TEXT_OR_NULL:
        return not values
    plan = _PLANS[section]
    try:
        columns: dict[str, Sequence[str | None]] = dict(
            zip(plan.required, zip(*map(plan.row, values), strict=True), strict=True)
        )
    except KeyError:  # a required field is missing
        return False
    nulls = type(None) in types
    for name in plan.optional_numbers + (plan.optional_text if nulls else ()):
        columns[name] = [*map(operator.methodcaller("get", name, "0"), values)]
    return (
        # all() is a cheap first look: only null and "" are false, and "" is fine.
        not (
            nulls
            and any(not all(col) and None in col for col in map(columns.__getitem__, plan.not_null))
        )
        and all({*columns[name]} == {section} for name in plan.named)
        and all(_plain_digits(columns[name]) for name in plan.numbers)
    )


def _plain_digits(texts: Sequence[Any]) -> bool:
    """Whether every text is 1 to 18 ASCII digits: a whole number int() reads, in range."""
    digits = "".join(texts)
    return (
        digits.isascii()
        and digits.isdecimal()
        and min(map(len, texts)) > 0
        and max(map(len, texts)) <= _NUMBER_DIGITS
    )


def _entry_problem(section: str, entry: dict[str, Any], *, exact: bool) -> str | None:
    """Why msal cannot use this entry or it cannot be written back, or None."""
    fields = _RULES[section]
    for name, field in fields.items():
        if name in entry:
            reason = _field_problem(section, field.kind, entry[name], exact=exact)
        else:
            reason = "is missing" if field.required else None
        if reason is not None:
            return f"{name} {reason}"
    for name, value in entry.items():
        if name not in fields:
            reason = _json_problem(value, 3, exact=exact)
            if reason is not None:
                return f"a field msal does not read {reason}"
    return None


def _field_problem(section: str, kind: _Kind, value: object, *, exact: bool) -> str | None:
    if kind == "whole number":
        return _whole_number_problem(value, exact=exact)
    if kind == "the section's name":
        return None if value == section else f'is not "{section}"'
    if kind == "text":
        return None if isinstance(value, str) else "is not text"
    return None if value is None or isinstance(value, str) else "is not text or null"


def _whole_number_problem(value: object, *, exact: bool) -> str | None:
    """What msal's ``int(value)`` needs: text of ASCII digits (as msal writes) or a number.

    A float must be finite and whole, and the value within 64 bits (what the other SDKs
    parse, and far within the float msal subtracts it from).
    """
    if isinstance(value, str):
        if not _WHOLE_NUMBER.fullmatch(value):
            return "is not a whole number"
        if len(value) > _NUMBER_DIGITS + 2:
            return "is out of range"  # and too long to convert cheaply
        number = int(value)
    elif isinstance(value, bool):
        return "is not a whole number"
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return "is not a whole number"
        if not exact and abs(value) >= _INT64:
            raise InexactError
        number = int(value)
    else:
        return "is not a whole number"
    return None if -_INT64 <= number < _INT64 else "is out of range"


def _json_problem(value: object, enclosing: int, *, exact: bool) -> str | None:
    """Why ``value`` cannot be written back exactly in strict JSON, or None.

    ``enclosing`` counts the objects and arrays around it, the document included.
    """
    reason = None
    if isinstance(value, (dict, list)):
        if enclosing >= MAX_DEPTH:
            return f"is nested more than {MAX_DEPTH} levels deep"
        for item in value.values() if isinstance(value, dict) else value:
            reason = _json_problem(item, enclosing + 1, exact=exact)
            if reason is not None:
                break
    elif isinstance(value, float):
        if not math.isfinite(value):
            reason = "holds NaN or an infinite number"
        elif not exact and abs(value) >= _INT64:
            raise InexactError
    elif value is OVERLONG:
        reason = "holds an integer too long to read"
    return reason  # text, integers, booleans and null are always fine
