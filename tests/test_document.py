"""The cache document codec: the same bytes with or without the optional orjson speed-up."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from msal_persist import _codec, _schema
from msal_persist._codec import (
    MAX_DEPTH,
    SECTIONS,
    NotACacheError,
    decode_document,
    encode_document,
    parse_document,
)

ENTRY = st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4)
DOCUMENT = st.dictionaries(
    st.sampled_from(["AccessToken", "RefreshToken", "IdToken", "Account", "AppMetadata", "X"]),
    st.dictionaries(st.text(max_size=12), ENTRY, max_size=3),
)


@given(DOCUMENT)
def test_encoding_is_the_stdlib_compact_ascii_document(document: dict) -> None:
    """Encoded bytes equal json.dumps(compact, ASCII) and parse back to the same document."""
    data = encode_document(document)
    assert data == json.dumps(document, separators=(",", ":")).encode()
    assert parse_document(data) == document


def test_non_ascii_text_is_escaped_as_msal_does() -> None:
    """Usernames outside ASCII are written as unicode escapes, readable under any locale."""
    data = encode_document({"Account": {"k": {"username": "zoë@example.test"}}})
    assert data.isascii()
    assert b"\\u00eb" in data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"{", "not valid JSON"),
        (b"\xff", "not valid JSON|not UTF-8"),
        (b"[]", "a JSON list"),
        (b'{"Account": {"k": 1}}', "section Account"),
        (b"[" * 100_000, "not valid JSON|nested too deeply"),
    ],
)
def test_what_is_not_a_cache_document(data: bytes, reason: str) -> None:
    """Empty, invalid, non-object and mis-shaped documents are refused without quoting them."""
    with pytest.raises(NotACacheError, match=reason):
        parse_document(data)


def test_lone_surrogate_escapes_are_accepted_as_the_stdlib_does() -> None:
    """A document the stdlib accepts is never judged corrupt because a faster codec would not."""
    assert parse_document(b'{"X": {"k": {"v": "\\ud800"}}}') == {"X": {"k": {"v": "\ud800"}}}


# -- decode_document: entries judged field by field ----------------------------------------

CACHE_KEY = "0c1d-home.tenant-login.example-accesstoken-client-tenant-user.read"
SECRET = "eyJ-very-secret-token"
USERNAME = "ada@example.test"
HOME_ACCOUNT_ID = "0c1d-home.tenant"
PRIVATE = (CACHE_KEY, SECRET, USERNAME, HOME_ACCOUNT_ID)

GOOD: dict[str, dict[str, Any]] = {
    "AccessToken": {
        "credential_type": "AccessToken",
        "secret": SECRET,
        "home_account_id": HOME_ACCOUNT_ID,
        "environment": "login.example",
        "client_id": "client",
        "target": "User.Read",
        "realm": "tenant",
        "token_type": "Bearer",
        "cached_at": "1700000000",
        "expires_on": "1700003600",
        "extended_expires_on": "1700003600",
    },
    "RefreshToken": {
        "credential_type": "RefreshToken",
        "secret": SECRET,
        "home_account_id": HOME_ACCOUNT_ID,
        "environment": "login.example",
        "client_id": "client",
        "target": "User.Read",
        "last_modification_time": "1700000000",
    },
    "IdToken": {
        "credential_type": "IdToken",
        "secret": SECRET,
        "home_account_id": HOME_ACCOUNT_ID,
        "environment": "login.example",
        "realm": "tenant",
        "client_id": "client",
    },
    "Account": {
        "home_account_id": HOME_ACCOUNT_ID,
        "environment": "login.example",
        "realm": "tenant",
        "local_account_id": "0c1d",
        "username": USERNAME,
        "authority_type": "MSSTS",
        "account_source": "authorization_code",
    },
    "AppMetadata": {"client_id": "client", "environment": "login.example", "family_id": "1"},
}
MISSING = object()
# Non-standard literals, spliced into the JSON text where these strings stand.
LITERALS = {'"<1e999>"': "1e999", '"<NaN>"': "NaN", '"<Infinity>"': "Infinity"}


def document_text(document: dict[str, Any]) -> str:
    text = json.dumps(document)
    for placeholder, literal in LITERALS.items():
        text = text.replace(placeholder, literal)
    return text


def damaged(section: str, field: str, value: object) -> dict[str, Any]:
    """A document with one good entry per section plus one damaged entry in ``section``."""
    entry = dict(GOOD[section])
    if value is MISSING:
        del entry[field]
    else:
        entry[field] = value
    document = {name: {f"good-{name}": dict(good)} for name, good in GOOD.items()}
    document[section][CACHE_KEY] = entry
    return document


BAD_ENTRIES = [
    ("AccessToken", "expires_on", "<1e999>", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "1e999", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "<NaN>", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "<Infinity>", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "soon", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", " 1700003600", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "1700003600.5", "expires_on is not a whole number"),
    ("AccessToken", "expires_on", 1700003600.5, "expires_on is not a whole number"),
    ("AccessToken", "expires_on", True, "expires_on is not a whole number"),
    ("AccessToken", "expires_on", None, "expires_on is not a whole number"),
    ("AccessToken", "expires_on", "9" * 30, "expires_on is out of range"),
    ("AccessToken", "expires_on", 2**63, "expires_on is out of range"),
    ("AccessToken", "expires_on", MISSING, "expires_on is missing"),
    ("AccessToken", "refresh_on", "later", "refresh_on is not a whole number"),
    ("AccessToken", "secret", MISSING, "secret is missing"),
    ("AccessToken", "secret", 42, "secret is not text"),
    ("AccessToken", "credential_type", MISSING, "credential_type is missing"),
    ("AccessToken", "credential_type", "AccessToken_With_AuthScheme", 'is not "AccessToken"'),
    ("AccessToken", "target", 42, "target is not text"),
    ("AccessToken", "target", None, "target is not text"),
    ("AccessToken", "token_type", ["Bearer"], "token_type is not text"),
    ("AccessToken", "home_account_id", 7, "home_account_id is not text or null"),
    ("AccessToken", "ext_cache_key", {"k": "v"}, "ext_cache_key is not text or null"),
    ("AccessToken", "cached_at", "<NaN>", "a field msal does not read holds NaN"),
    ("AccessToken", "x_other_sdk", ["<Infinity>"], "a field msal does not read holds NaN"),
    ("RefreshToken", "secret", MISSING, "secret is missing"),
    ("RefreshToken", "secret", ["a"], "secret is not text"),
    ("RefreshToken", "client_id", MISSING, "client_id is missing"),
    ("RefreshToken", "credential_type", "AccessToken", 'is not "RefreshToken"'),
    ("RefreshToken", "target", 42, "target is not text or null"),
    ("RefreshToken", "family_id", 1, "family_id is not text or null"),
    ("RefreshToken", "last_modification_time", "yesterday", "is not a whole number"),
    ("IdToken", "secret", MISSING, "secret is missing"),
    ("IdToken", "credential_type", MISSING, "credential_type is missing"),
    ("IdToken", "realm", 3.5, "realm is not text or null"),
    ("Account", "authority_type", MISSING, "authority_type is missing"),
    ("Account", "authority_type", None, "authority_type is not text"),
    ("Account", "username", MISSING, "username is missing"),
    ("Account", "username", None, "username is not text"),
    ("Account", "home_account_id", ["h"], "home_account_id is not text or null"),
    ("Account", "local_account_id", 5, "local_account_id is not text or null"),
    ("AppMetadata", "family_id", 1, "family_id is not text or null"),
]


@contextmanager
def codec(*, fast: bool) -> Iterator[None]:
    """Run the block with orjson (when installed) or with the standard library alone."""
    saved = _codec._fast_loads, _codec._fast_dumps
    if not fast:
        _codec._fast_loads = _codec._fast_dumps = None
    try:
        yield
    finally:
        _codec._fast_loads, _codec._fast_dumps = saved


@pytest.fixture(params=[True, False], ids=["orjson", "stdlib"])
def fast(request: pytest.FixtureRequest) -> Iterator[bool]:
    with codec(fast=request.param):
        yield request.param


@pytest.mark.parametrize(("section", "field", "value", "problem"), BAD_ENTRIES)
@pytest.mark.usefixtures("fast")
def test_a_bad_entry_is_left_out_and_the_good_ones_kept(
    section: str, field: str, value: object, problem: str
) -> None:
    """One entry msal cannot use is left out with a one-line reason; every other is kept."""
    decoded = decode_document(document_text(damaged(section, field, value)))
    assert decoded.rejected == 1
    (line,) = decoded.problems
    assert line.startswith(f"{section} entry: ")
    assert problem in line
    assert decoded.state == {name: {f"good-{name}": good} for name, good in GOOD.items()}


@pytest.mark.parametrize(("section", "field", "value", "problem"), BAD_ENTRIES)
def test_problems_never_quote_keys_secrets_usernames_or_home_account_ids(
    section: str, field: str, value: object, problem: str
) -> None:
    """A problem line names the section and field, never a cache key or a private value."""
    document = damaged(section, field, value)
    for entry in document[section].values():
        entry.update({"x": SECRET, USERNAME: HOME_ACCOUNT_ID})
    decoded = decode_document(document_text(document))
    assert decoded.problems, problem
    for line in decoded.problems:
        assert not any(private in line for private in PRIVATE), line


@pytest.mark.usefixtures("fast")
def test_entries_that_are_good_enough_for_msal_are_kept() -> None:
    """Optional fields may be absent, key parts null, numbers JSON integers or whole floats."""
    access_token = dict(GOOD["AccessToken"], home_account_id=None, realm=None, expires_on=17e8)
    del access_token["target"], access_token["token_type"]
    document = {
        "AccessToken": {
            "a": access_token,
            "b": dict(GOOD["AccessToken"], expires_on=-5, refresh_on="0017", key_id=None),
        },
        "RefreshToken": {"r": dict(GOOD["RefreshToken"], target=None, family_id=None)},
        "IdToken": {"i": {"credential_type": "IdToken", "secret": ""}},
        "Account": {"a": {"authority_type": "ADFS", "username": "", "extra": {"n": [1.5]}}},
        "AppMetadata": {"m": {}},
    }
    decoded = decode_document(json.dumps(document))
    assert (decoded.rejected, decoded.problems) == (0, ())
    assert decoded.state == document


@pytest.mark.usefixtures("fast")
def test_sections_of_other_tools_are_kept_as_they_are() -> None:
    """Top-level keys msal does not know are kept whole, whatever JSON they hold."""
    other = {
        "Extra": {"k": [1, 2.5, None, True, {"deep": ["x"]}]},
        "Version": 3,
        "Note": "kept",
        "Big": 123456789012345678901234567890,
        "Nested": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)),
    }
    document = {"Account": {"a": GOOD["Account"]}, **other}
    decoded = decode_document(json.dumps(document))
    assert (decoded.rejected, decoded.state) == (0, document)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[1e999]", "holds NaN or an infinite number"),
        ("-1e999", "holds NaN or an infinite number"),
        ('{"a": NaN}', "holds NaN or an infinite number"),
        ('{"a": [Infinity]}', "holds NaN or an infinite number"),
        ("[" * 200 + "]" * 200, f"is nested more than {MAX_DEPTH} levels deep"),
        ("[" * MAX_DEPTH + "]" * MAX_DEPTH, f"is nested more than {MAX_DEPTH} levels deep"),
        ("[1" + "0" * 5000 + "]", "holds an integer too long to read"),
    ],
)
@pytest.mark.usefixtures("fast")
def test_a_section_of_another_tool_that_cannot_be_written_back_is_left_out(
    value: str, problem: str
) -> None:
    """1e999, NaN, Infinity, deep nesting, huge integers: the section is left out alone."""
    text = '{"Account": {"a": %s}, "Other_tool": %s, "Kept": [1]}' % (  # noqa: UP031
        json.dumps(GOOD["Account"]),
        value,
    )
    decoded = decode_document(text)
    assert decoded.problems == (f'section "Other_tool" of another tool: {problem}',)
    assert decoded.state == {"Account": {"a": GOOD["Account"]}, "Kept": [1]}
    encode_document(decoded.state)  # what is kept can be written back


@pytest.mark.usefixtures("fast")
def test_a_section_nested_980_deep_is_left_out_or_the_file_is_bad_content() -> None:
    """Nesting the encoder cannot write back never reaches the state, on any Python.

    Where the interpreter's parser reads it, the section is left out; where the parser
    itself gives up (Python 3.10's stdlib at this depth), the whole file is bad content.
    """
    text = '{"Account": {"a": %s}, "Other_tool": %s}' % (  # noqa: UP031
        json.dumps(GOOD["Account"]),
        "[" * 980 + "]" * 980,
    )
    try:
        decoded = decode_document(text)
    except NotACacheError as error:
        assert "nested too deeply" in str(error)  # noqa: PT017 - either outcome is right
    else:
        assert decoded.state == {"Account": {"a": GOOD["Account"]}}
        encode_document(decoded.state)


def test_a_section_name_that_may_be_private_is_not_quoted() -> None:
    """Only plain names of other tools' sections are quoted: never one that may be an id."""
    decoded = decode_document('{"%s": [NaN], "a\\nb": [NaN]}' % HOME_ACCOUNT_ID)  # noqa: UP031
    assert decoded.problems == ("a section of another tool: holds NaN or an infinite number",) * 2


@pytest.mark.usefixtures("fast")
def test_nan_literals_in_an_entry_cost_only_that_entry() -> None:
    """NaN/Infinity literals (which Python peers write) are judged where they stand."""
    text = document_text(damaged("RefreshToken", "foci_extra", {"x": "<NaN>"}))
    assert "NaN" in text
    decoded = decode_document(text)
    assert decoded.rejected == 1
    assert len(decoded.state["RefreshToken"]) == 1


@pytest.mark.usefixtures("fast")
def test_integers_beyond_64_bits_are_kept_exactly() -> None:
    """Integers orjson reads as floats are kept exactly, and written back exactly."""
    for literal in ("123456789012345678901234567890", "-9223372036854775809"):
        decoded = decode_document('{"X": {"n": %s}}' % literal)  # noqa: UP031
        assert decoded.state == {"X": {"n": int(literal)}}
        assert encode_document(decoded.state) == b'{"X":{"n":%s}}' % literal.encode()


@pytest.mark.usefixtures("fast")
def test_whole_document_problems_are_still_refused() -> None:
    """decode_document refuses what parse_document refuses, for the whole document."""
    for data in (b"", b"{", b"[]", b"NaN", b"1" + b"0" * 5000, b'{"Account": {"k": 1}}'):
        with pytest.raises(NotACacheError):
            decode_document(data)


def test_parse_document_refuses_overlong_integers_as_not_a_cache() -> None:
    """An integer Python cannot read is a NotACacheError, not a bare ValueError."""
    with pytest.raises(NotACacheError, match="integer too long"):
        parse_document(b'{"X": 1' + b"0" * 5000 + b"}")


def test_every_section_has_rules() -> None:
    """The rule table covers exactly msal's five sections."""
    assert set(_schema._RULES) == SECTIONS


def test_a_clean_section_is_kept_without_copying() -> None:
    """Sections that pass at a glance are handed on as they are (the cheap, common path)."""
    document = {name: {"k": dict(good)} for name, good in GOOD.items()}
    decoded = decode_document(json.dumps(document))
    state = decoded.state
    assert all(_schema._all_plain(name, state[name]) for name in GOOD)
    assert state == document


# -- encode_document: strict JSON only -------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.usefixtures("fast")
def test_encoding_refuses_nan_and_infinity(value: float) -> None:
    """NaN and infinities raise ValueError: never written as NaN, Infinity or null."""
    for state in (
        {"AccessToken": {"k": dict(GOOD["AccessToken"], expires_on=value)}},
        {"X": {"a": [{"b": value}]}},
        {"X": value},
    ):
        with pytest.raises(ValueError, match="not JSON compliant"):
            encode_document(state)


@pytest.mark.usefixtures("fast")
def test_encoding_refuses_a_document_nested_too_deeply() -> None:
    """Nesting the encoders cannot handle raises ValueError, not RecursionError."""
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        encode_document({"X": deep})


@pytest.mark.usefixtures("fast")
def test_encoding_keeps_lone_surrogates_and_floats() -> None:
    """What the stdlib reads back the same (lone surrogates, floats) is written exactly."""
    state = {"X": {"s": "\ud800", "f": [0.1, -0.0, 1e300, 5e-324]}}
    assert json.loads(encode_document(state)) == state


# -- round trip: what decode_document keeps, encode_document writes back exactly ------------


def _refuse(literal: str) -> None:
    raise AssertionError(f"non-standard JSON literal {literal} was written")


JSON_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63 - 4, max_value=2**70)
    | st.floats()
    | st.text(max_size=6)
)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
NESTED = st.integers(min_value=MAX_DEPTH - 4, max_value=MAX_DEPTH + 2).map(
    lambda depth: json.loads("[" * depth + "]" * depth)
)
FIELD_VALUE = (
    JSON_VALUE
    | NESTED
    | st.integers(min_value=-(2**64), max_value=2**64).map(str)
    | st.sampled_from(["AccessToken", "RefreshToken", "IdToken", "1700000000", "-1", "1e999"])
)


@st.composite
def cache_documents(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True)):
        entries = {}
        for key in draw(st.lists(st.text(max_size=4), unique=True, max_size=3)):
            entry = dict(GOOD[section])
            for field in draw(st.lists(st.sampled_from(sorted(entry)), max_size=2)):
                entry.pop(field, None)
            extra = draw(st.dictionaries(st.sampled_from([*GOOD[section], "x"]), FIELD_VALUE))
            entries[key] = entry | extra
        document[section] = entries
    others = draw(st.dictionaries(st.sampled_from(["X", "Y", "Z"]), JSON_VALUE | NESTED))
    return document | others


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(cache_documents(), st.booleans())
def test_what_decode_keeps_encode_writes_back_exactly(document: dict, fast: bool) -> None:
    """Kept state encodes to strict JSON that decodes back to itself with nothing left out."""
    with codec(fast=fast):
        # allow_nan: the document may hold NaN and Infinity literals, as Python peers write.
        decoded = decode_document(json.dumps(document))
        assume(decoded.state)
        data = encode_document(decoded.state)
        assert data.isascii()
        assert json.loads(data, parse_constant=_refuse) == decoded.state
        again = decode_document(data)
    assert (again.rejected, again.problems) == (0, ())
    assert again.state == decoded.state
    assert decoded.rejected == len(decoded.problems)
