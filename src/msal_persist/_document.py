"""What counts as an msal token cache document (the unified cache schema), and its codec.

With the optional ``fast`` extra (orjson) installed, documents are decoded and encoded
several times faster; the bytes are the same JSON document either way (compact, ASCII
only, as peers that read with a locale encoding expect).

:func:`decode_document` is what a cache hands msal. It judges every entry of msal's five
sections field by field against what msal for Python reads (:data:`_RULES`), so that no
code path of msal raises on what it is given, and it keeps only what
:func:`encode_document` can write back exactly in strict JSON (RFC 8259: no ``NaN``, no
``Infinity``, nesting no deeper than :data:`MAX_DEPTH`). Whatever it leaves out, one entry
or one section of another tool at a time, it counts and describes without quoting the file.

The literals ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON, but Python's own
``json.dumps`` writes them, so a Python peer that read a ``1e999`` writes ``Infinity``
back. They are judged where they stand, exactly like ``1e999``: the entry or the section of
another tool holding one is left out, and the rest of the document is kept.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final, Literal

try:  # the optional "fast" extra
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads: Callable[[bytes | str], Any] | None = None
    _fast_dumps: Callable[[Any], bytes] | None = None
else:
    _fast_loads, _fast_dumps = orjson.loads, orjson.dumps

__all__ = [
    "MAX_DEPTH",
    "SECTIONS",
    "Decoded",
    "NotACacheError",
    "decode_document",
    "encode_document",
    "parse_document",
]

SECTIONS: Final = frozenset({"AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata"})
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


def parse_document(data: str | bytes) -> dict[str, Any]:
    """Decode a cache document, insisting only on the shape msal will index into.

    Entries are not judged: ``NaN`` and ``Infinity`` come back as floats. A cache hands
    msal what :func:`decode_document` keeps instead.

    Raises:
        NotACacheError: Empty, not JSON, not an object, a known section that is not a
            mapping of entries, or an integer too long for Python to read.
    """
    state, _ = _load(data, keep_overlong=False)
    return _checked_shape(state)


def decode_document(data: str | bytes) -> Decoded:
    """Decode a cache document and keep what msal can use and strict JSON can carry.

    Each entry of msal's sections must hold the fields msal reads, with types msal can
    use (see :data:`_RULES`); any other field, and every section of another tool, must be
    strict JSON no deeper than :data:`MAX_DEPTH`. An entry or a section that fails is left
    out and described in :attr:`Decoded.problems`; the rest is kept as it is.

    Raises:
        NotACacheError: For the whole document, as :func:`parse_document` does (empty,
            not JSON, not an object, a known section that is not a mapping of entries).
    """
    state, exact = _load(data, keep_overlong=True)
    try:
        return _judge(_checked_shape(state), exact=exact)
    except _InexactError:
        # orjson reads an integer beyond 64 bits as the nearest float; only the stdlib
        # keeps its exact value, which is what must be written back.
        state = _loads_stdlib(data, keep_overlong=True)
        return _judge(state, exact=True)


def encode_document(state: dict[str, Any]) -> bytes:
    """Encode a cache document compactly (msal's own ``indent=4`` is the same document).

    The C encoder (or orjson) is several times faster than the pure-Python one that
    ``indent`` forces. Non-ASCII text is escaped, as msal's ``serialize()`` does. Only
    strict JSON is written: what cannot be written exactly raises rather than being
    written some other way.

    Raises:
        ValueError: ``state`` holds NaN or an infinite number, refers to itself, or is
            nested too deeply to encode.
        TypeError: ``state`` holds something that is not JSON (bytes, a set...).
    """
    if _fast_dumps is not None:
        try:
            data = _fast_dumps(state)
        except TypeError:
            pass  # integers beyond 64 bits, lone surrogates, deep nesting: the stdlib decides
        else:
            # orjson silently writes NaN and infinities as null: trust it only without them.
            if data.isascii() and not _holds_nonfinite(state):
                return data
    try:
        return json.dumps(state, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise ValueError("the document is nested too deeply to encode") from None


# -- decoding -------------------------------------------------------------------------------


class _Overlong:
    """Stands for an integer literal too long for ``int()``, until its entry is left out."""


_OVERLONG: Final = _Overlong()


class _InexactError(Exception):
    """orjson turned an integer literal into a float: decode again with the stdlib."""


def _int_or_overlong(text: str) -> int | _Overlong:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        return _OVERLONG


def _load(data: str | bytes, *, keep_overlong: bool) -> tuple[Any, bool]:
    """Decode JSON; return the value and whether the stdlib decoded it (exact integers)."""
    if not data.strip():
        raise NotACacheError("the file is empty")
    if _fast_loads is not None:
        try:
            return _fast_loads(data), False
        except ValueError:
            pass  # orjson is stricter (lone surrogates, 1e999, NaN): the stdlib decides
    return _loads_stdlib(data, keep_overlong=keep_overlong), True


def _loads_stdlib(data: str | bytes, *, keep_overlong: bool) -> Any:
    parse_int: Callable[[str], Any] | None = None
    while True:
        try:
            return json.loads(data, parse_int=parse_int)
        except json.JSONDecodeError as error:
            # error.msg is a fixed phrase such as "Expecting value": never the file's content.
            raise NotACacheError(
                f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
            ) from None
        except UnicodeDecodeError:
            raise NotACacheError("not UTF-8 text") from None
        except RecursionError:
            raise NotACacheError("JSON nested too deeply") from None
        except ValueError:
            # int() refuses integer literals longer than sys.get_int_max_str_digits().
            if not keep_overlong or parse_int is not None:
                raise NotACacheError("holds an integer too long to read") from None
            parse_int = _int_or_overlong


def _checked_shape(state: Any) -> dict[str, Any]:
    if not isinstance(state, dict):
        kind = "int" if state is _OVERLONG else type(state).__name__
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
    "AccessToken": {
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
    "RefreshToken": {
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
    "IdToken": {
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
    "Account": {
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
    "AppMetadata": {
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


def _judge(state: dict[str, Any], *, exact: bool) -> Decoded:
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
            raise _InexactError
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
            raise _InexactError
    elif value is _OVERLONG:
        reason = "holds an integer too long to read"
    return reason  # text, integers, booleans and null are always fine


# -- encoding -------------------------------------------------------------------------------

_SCALARS: Final = frozenset({str, int, bool, type(None)})


def _holds_nonfinite(state: dict[str, Any]) -> bool:
    """Whether NaN or an infinity is anywhere in ``state`` (encoded by orjson, so acyclic)."""
    for section in state.values():
        try:
            types = {*map(type, chain.from_iterable(map(dict.values, section.values())))}
        except (AttributeError, TypeError):  # not a mapping of entries: look at everything
            types = None
        if types is None or not types <= _SCALARS:
            pending = [section]
            while pending:
                item = pending.pop()
                if isinstance(item, float):
                    if not math.isfinite(item):
                        return True
                elif isinstance(item, dict):
                    pending.extend(item.values())
                elif isinstance(item, (list, tuple)):
                    pending.extend(item)
    return False
