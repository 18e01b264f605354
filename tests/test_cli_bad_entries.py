"""show and doctor on a cache with entries msal cannot use: told, counted, never fatal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msal
import pytest

from cli_helpers import run
from msal_persist.testing import LocalAuthority

ALICE = "alice@example.test"
BOB = "bob@example.test"
# Non-standard literals, spliced into the JSON text where these strings stand.
LITERALS = {'"<1e999>"': "1e999", '"<NaN>"': "NaN"}


@pytest.fixture
def document() -> dict[str, Any]:
    """A document real msal wrote: Alice and Bob signed in to one app."""
    authority = LocalAuthority()
    memory = msal.SerializableTokenCache()
    app = authority.public_client(token_cache=memory)
    for username in (ALICE, BOB):
        authority.sign_in(app, username=username)
    return json.loads(memory.serialize())


def write(path: Path, document: dict[str, Any]) -> Path:
    text = json.dumps(document)
    for placeholder, literal in LITERALS.items():
        text = text.replace(placeholder, literal)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def alices(document: dict[str, Any], section: str) -> dict[str, Any]:
    home_account_id = LocalAuthority().home_account_id(ALICE)
    (entry,) = (
        e for e in document[section].values() if e.get("home_account_id") == home_account_id
    )
    return entry


def secrets(document: dict[str, Any]) -> list[str]:
    """Every secret: what no output may quote."""
    return [
        entry["secret"]
        for section in ("AccessToken", "RefreshToken", "IdToken")
        for entry in document[section].values()
    ]


def private_values(document: dict[str, Any]) -> list[str]:
    """Secrets, usernames, home account ids and cache keys: what no reason may quote."""
    found = secrets(document)
    for section in ("AccessToken", "RefreshToken", "IdToken", "Account"):
        for key, entry in document[section].items():
            found += [key, entry["home_account_id"]]
    return [*found, ALICE, BOB]


def left_out_line(out: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith("  left out: ")]
    return line


@pytest.fixture
def damaged(cache_path: Path, document: dict[str, Any]) -> Path:
    """Alice's access token expires on 1e999 and another tool's section holds NaN."""
    alices(document, "AccessToken")["expires_on"] = "<1e999>"
    document["OtherTool"] = {"ratio": "<NaN>"}
    return write(cache_path, document)


def test_show_lists_the_usable_entries_and_says_what_was_left_out(capsys, damaged, document):
    """Show counts the entries left out and why, lists the rest, and changes nothing."""
    before = damaged.read_bytes()
    code, out, err = run(capsys, "show", str(damaged))
    assert (code, err) == (0, "")
    assert out.startswith(f"cache: {damaged}\n  2 accounts, 5 tokens, 1 app\n")
    assert (
        "  left out: 2 entries msal cannot use: AccessToken entry: expires_on is not a whole "
        'number; section "OtherTool" of another tool: holds NaN or an infinite number\n'
    ) in out
    assert ALICE in out
    assert BOB in out
    assert not any(value in left_out_line(out) for value in private_values(document))
    assert not any(secret in out for secret in secrets(document))
    assert damaged.read_bytes() == before


def test_show_json_reports_the_left_out_entries(capsys, damaged, document):
    """Show --json gives the count and one reason per entry left out, and no private value."""
    code, out, _ = run(capsys, "show", str(damaged), "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["left_out"] == {
        "count": 2,
        "problems": [
            "AccessToken entry: expires_on is not a whole number",
            'section "OtherTool" of another tool: holds NaN or an infinite number',
        ],
    }
    assert {a["username"] for a in shown["accounts"]} == {ALICE, BOB}
    assert "OtherTool" not in shown["other_sections"]
    reasons = json.dumps(shown["left_out"])
    assert not any(value in reasons for value in private_values(document))
    assert not any(secret in out for secret in secrets(document))


def test_show_json_of_a_healthy_cache_left_nothing_out(capsys, cache_path, document):
    """A cache msal wrote has nothing left out."""
    code, out, _ = run(capsys, "show", str(write(cache_path, document)), "--json")
    assert code == 0
    assert json.loads(out)["left_out"] == {"count": 0, "problems": []}


@pytest.mark.parametrize(
    "bad",
    [
        ("AccessToken", "expires_on", "<NaN>"),
        ("AccessToken", "expires_on", {"when": "soon"}),
        ("AccessToken", "target", 42),
        ("RefreshToken", "secret", None),
        ("IdToken", "credential_type", ["IdToken"]),
        ("Account", "username", ["x"]),
        ("Account", "home_account_id", {"a": 1}),
    ],
)
def test_show_never_crashes_on_a_bad_entry(capsys, tmp_path, document, bad):
    """Whatever a field holds, show lists the rest and leaves that one entry out."""
    section, field, value = bad
    alices(document, section)[field] = value
    code, out, err = run(capsys, "show", str(write(tmp_path / "cache.json", document)))
    assert (code, err) == (0, "")
    assert f"left out: 1 entry msal cannot use: {section} entry: {field} " in out
    assert BOB in out


def doctor_content(capsys, path: Path) -> tuple[int, str, str]:
    code, out, _ = run(capsys, "doctor", str(path))
    (line,) = [line for line in out.splitlines() if line[6:].startswith("content: ")]
    return code, line, out


def test_doctor_warns_about_entries_msal_cannot_use(capsys, damaged, document):
    """The content check is a WARN naming each reason and the set-aside to come."""
    before = damaged.read_bytes()
    code, line, out = doctor_content(capsys, damaged)
    assert code == 0  # a warning, not a failure: the usable entries are served
    assert line == (
        "WARN  content: 2 entries msal cannot use: AccessToken entry: expires_on is not a whole "
        'number; section "OtherTool" of another tool: holds NaN or an infinite number; the next '
        "msal-persist write sets the original file aside as token_cache.json.corrupt-<time> and "
        "keeps the usable entries: 2 accounts, 5 tokens, 1 app"
    )
    assert not any(value in line for value in private_values(document))
    assert not any(secret in out for secret in secrets(document))
    assert damaged.read_bytes() == before


def test_doctor_counts_the_same_reason_once(capsys, cache_path, document):
    """Many entries with the same problem are one reason with a count, not a long line."""
    for entry in document["AccessToken"].values():
        entry["expires_on"] = "soon"
    alices(document, "Account")["authority_type"] = None
    _, line, _ = doctor_content(capsys, write(cache_path, document))
    assert line.startswith(
        "WARN  content: 3 entries msal cannot use: AccessToken entry: expires_on is not a whole "
        "number (2 times); Account entry: authority_type is not text; the next"
    )


def test_doctor_keeps_long_lists_of_reasons_short(capsys, cache_path, document):
    """Past five different reasons, doctor says how many more there are."""
    for number in range(7):
        document[f"Tool_{'x' * number}"] = ["<NaN>"] if number % 2 else [["<1e999>"]]
    access_token = alices(document, "AccessToken")
    for field in ("secret", "credential_type", "expires_on"):
        entry = dict(access_token)
        del entry[field]
        document["AccessToken"][f"key-{field}"] = entry
    _, line, _ = doctor_content(capsys, write(cache_path, document))
    assert "content: 10 entries msal cannot use: " in line
    assert line.count(";") == 6  # five reasons, "and N other reasons", the set-aside
    assert "; and 5 other reasons; the next msal-persist write" in line


def test_doctor_content_is_ok_for_a_healthy_cache(capsys, cache_path, document):
    """Nothing left out: the content check stays OK."""
    _, line, _ = doctor_content(capsys, write(cache_path, document))
    assert line == "OK    content: a valid msal token cache: 2 accounts, 6 tokens, 1 app"
