"""The cache document codec: the same bytes with or without the optional orjson speed-up."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msal_persist._document import NotACacheError, encode_document, parse_document

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
