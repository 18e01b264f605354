"""The msal-persist command line tool: every command, its output, its errors and exit codes."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msal
import pytest

import msal_persist
from cli_helpers import doctor_checks, run
from msal_persist import PersistedTokenCache
from msal_persist.testing import DEFAULT_CLIENT_ID, DEFAULT_SCOPES, LocalAuthority
from process_helpers import finished_worker, running, stop, worker, worker_env

OTHER_CLIENT_ID = "11111111-1111-4111-8111-111111111111"
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ALICE = "alice@example.test"
BOB = "Bob@Example.test"

EXIT_CODES = {0, 1, 2, 3, 4, 5, 6, 7, 130}
ROOT = Path(__file__).resolve().parent.parent

# -- helpers --------------------------------------------------------------------------------


def sign_in(path: Path, username: str, client_id: str = DEFAULT_CLIENT_ID) -> LocalAuthority:
    """Sign ``username`` in through a real msal app on a PersistedTokenCache at ``path``."""
    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(path), client_id=client_id)
    authority.sign_in(app, username=username)
    return authority


def secrets_in(path: Path) -> list[str]:
    """Every ``secret`` value stored in the cache file at ``path``."""
    state = json.loads(path.read_bytes())
    return [
        entry["secret"]
        for section in state.values()
        if isinstance(section, dict)
        for entry in section.values()
        if isinstance(entry, dict) and "secret" in entry
    ]


def assert_no_secret(text: str, path: Path) -> None:
    found = secrets_in(path)
    assert found, "the fixture should hold secrets to look for"
    for secret in found:
        assert secret not in text
        assert secret[:24] not in text
    assert '"secret"' not in text


def listing(directory: Path) -> dict[str, bytes]:
    """Names and contents of the regular files in ``directory`` (to prove nothing changed)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.is_symlink()
    }


def console_script() -> Path:
    script = Path(sys.executable).parent / "msal-persist"
    if not script.exists():
        pytest.fail(
            f"console script {script} is missing: install the package into this environment "
            "(pip install -e .) before running the CLI tests"
        )
    return script


def run_command(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, env=worker_env(), timeout=timeout, check=False
    )


@contextmanager
def lock_held_by_another_process(cache: Path) -> Iterator[subprocess.Popen[str]]:
    """Hold ``<cache>.lockfile`` from a real subprocess for the duration of the block."""
    with running(worker("lock", "hold", f"{cache}.lockfile")) as proc:
        yield proc


_AUDIT_HOOKS: list[Any] = []


def _dispatch_audit(event: str, args: tuple[Any, ...]) -> None:
    for hook in tuple(_AUDIT_HOOKS):
        hook(event, args)


@contextmanager
def replacements_of(path: Path) -> Iterator[list[str]]:
    """Record every rename onto ``path`` (how FilePersistence publishes a write)."""
    seen: list[str] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "os.rename" and os.fspath(args[1]) == str(path):
            seen.append(os.fspath(args[0]))

    if not getattr(_dispatch_audit, "installed", False):
        # Audit hooks cannot be removed: install one dispatcher, once, and only when needed.
        sys.addaudithook(_dispatch_audit)
        _dispatch_audit.installed = True  # type: ignore[attr-defined]
    _AUDIT_HOOKS.append(hook)
    try:
        yield seen
    finally:
        _AUDIT_HOOKS.remove(hook)


def run_on_terminal(args: list[str], answer: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -m msal_persist`` on a pseudo-terminal and answer its prompt."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "msal_persist", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=worker_env(),
    )
    os.close(slave)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N]" in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
        code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        stop(proc)
        os.close(master)
    return code, output.decode(errors="replace").replace("\r\n", "\n")


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def cache(cache_path: Path) -> Path:
    """A cache written by real msal apps: two users, one of them in two client ids."""
    sign_in(cache_path, ALICE)
    sign_in(cache_path, BOB)
    sign_in(cache_path, BOB, client_id=OTHER_CLIENT_ID)
    cache_path.parent.chmod(0o700)
    return cache_path


@pytest.fixture
def foreign_cache(tmp_path: Path) -> Path:
    """A cache as Azure CLI / msal-extensions write it: indent=4, peers' sections and fields."""
    authority = LocalAuthority()
    memory = msal.SerializableTokenCache()
    app = authority.public_client(token_cache=memory, client_id=AZURE_CLI_CLIENT_ID)
    authority.sign_in(app, username=ALICE, scopes=["https://management.core.windows.net//.default"])
    state = json.loads(memory.serialize())
    for entry in state["AccessToken"].values():
        entry["ext_expires_on"] = entry["extended_expires_on"]  # as MSAL.NET adds
    for entry in state["Account"].values():
        entry["client_info"] = "eyJ1aWQiOiJ4In0"
    state["ForeignSection"] = {"some-key": {"value": 1}, "other-key": {"value": 2}}
    directory = tmp_path / ".azure"
    directory.mkdir(mode=0o700)
    path = directory / "msal_token_cache.json"
    path.write_text(json.dumps(state, indent=4))
    path.chmod(0o600)
    return path


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    directory = tmp_path / "corrupt"
    directory.mkdir(mode=0o700)
    path = directory / "token_cache.json"
    path.write_bytes(b'{"AccessToken": {"truncated')
    path.chmod(0o600)
    return path


@pytest.fixture
def symlink_loop(tmp_path: Path) -> Path:
    """A path whose read fails even for root: a symlink loop (ELOOP)."""
    first, second = tmp_path / "loop-a", tmp_path / "loop-b"
    first.symlink_to(second.name)
    second.symlink_to(first.name)
    return first


# -- the program as a whole -----------------------------------------------------------------


def test_version_names_the_package_and_msal(capsys):
    """--version prints the package version and the msal it runs with, exit 0."""
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"msal-persist {msal_persist.__version__} (msal {msal.__version__})"


@pytest.mark.parametrize("argv", [["--help"], ["clear", "--help"], ["remove", "--help"]])
def test_help_documents_every_exit_status(capsys, argv):
    """--help of the tool and of the changing commands lists each exit status."""
    code, out, _ = run(capsys, *argv)
    assert code == 0
    epilog = out.partition("exit status:")[2]
    assert {int(m) for m in re.findall(r"^  (\d+) ", epilog, re.MULTILINE)} == EXIT_CODES


def test_exit_statuses_are_documented_from_one_enum():
    """ExitCode holds every status; the docstring's table and the CLI guide's sentence follow."""
    from msal_persist import _cli  # noqa: PLC0415

    assert {int(code) for code in _cli.ExitCode} == EXIT_CODES
    expected = [(code.value, code.description) for code in _cli.ExitCode]
    assert _cli.__doc__ is not None
    table = _cli.__doc__.partition("===  ")[2].partition("\n")[2].partition("\n===  ")[0]
    rows = re.findall(r"^(\d+) +(.+(?:\n {5}.+)*)", table, re.MULTILINE)
    assert [(int(number), " ".join(text.split())) for number, text in rows] == expected
    guide = (ROOT / "docs" / "guides" / "cli.md").read_text(encoding="utf-8")
    sentence = re.search(r"Exit status: (.+?)\. ", " ".join(guide.split()))
    assert sentence is not None, "docs/guides/cli.md has no 'Exit status: ...' sentence"
    said = [p.partition(" ") for p in sentence.group(1).replace("`", "").split("; ")]
    assert [(int(number), words) for number, _, words in said] == [
        (code.value, code.summary) for code in _cli.ExitCode
    ]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["show", "--bogus"],
        ["demo", "--processes", "1"],
        ["clear", "--lock-timeout", "-1"],
        ["path", "--app", "../escape"],
    ],
)
def test_bad_arguments_are_usage_errors(capsys, argv):
    """Missing or invalid arguments exit 2 with argparse's message on stderr."""
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert re.search(r"^msal-persist( [a-z]+)?: error: ", err, re.MULTILINE), err


# -- path -----------------------------------------------------------------------------------


def test_path_prefers_a_safe_runtime_dir_and_explains_the_rules_above(
    capsys, tmp_path, monkeypatch
):
    """With a safe XDG_RUNTIME_DIR, path names rule 3, why 1 and 2 did not apply, tmpfs."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    code, out, _ = run(capsys, "path")
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == str(runtime / "msal-persist" / "token_cache.json")
    assert "chosen by rule 3 (xdg-runtime-dir)" in lines[1]
    assert "rule 1 (explicit) did not apply: no explicit path was given" in out
    assert "rule 2 (environment) did not apply: MSAL_PERSIST_CACHE is not set" in out
    assert "persists across reboots: no" in out
    assert "file: does not exist yet" in out


def test_path_falls_back_to_the_user_cache_dir_and_says_why(capsys, tmp_path, monkeypatch):
    """An unsafe XDG_RUNTIME_DIR is explained; the user cache dir persists across reboots."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    code, out, _ = run(capsys, "path", "--app", "my-tool")
    assert code == 0
    assert out.splitlines()[0] == str(tmp_path / "xdg-cache" / "my-tool" / "token_cache.json")
    assert "chosen by rule 4 (user-cache-dir)" in out
    assert f"rule 3 (xdg-runtime-dir) did not apply: XDG_RUNTIME_DIR={runtime} has mode 0755" in out
    assert "persists across reboots: yes" in out


def test_path_honours_the_environment_variable(capsys, cache, monkeypatch):
    """MSAL_PERSIST_CACHE wins over the directories, and an existing file's size is shown."""
    monkeypatch.setenv("MSAL_PERSIST_CACHE", str(cache))
    code, out, _ = run(capsys, "path")
    assert code == 0
    assert out.splitlines()[0] == str(cache)
    assert "chosen by rule 2 (environment)" in out
    assert "file: exists," in out


def test_path_rejects_an_environment_variable_naming_a_directory(capsys, tmp_path, monkeypatch):
    """MSAL_PERSIST_CACHE naming a directory exits 3 with a one-line error."""
    monkeypatch.setenv("MSAL_PERSIST_CACHE", str(tmp_path))
    code, out, err = run(capsys, "path")
    assert code == 3
    assert out == ""
    assert err == f"msal-persist: error: {tmp_path}: it names a directory, not a file\n"


# -- show -----------------------------------------------------------------------------------


def test_show_lists_accounts_and_tokens_but_no_secret(capsys, cache):
    """Show lists each account and its tokens per client id, never a secret."""
    before = cache.read_bytes()
    code, out, err = run(capsys, "show", str(cache))
    assert (code, err) == (0, "")
    assert out.startswith(f"cache: {cache}\n  2 accounts, 9 tokens, 2 apps\n")
    assert ALICE in out
    assert BOB in out
    assert out.count("access token   client") == 3
    assert out.count("refresh token  client") == 3
    assert out.count("ID token       client") == 3
    assert f"client {OTHER_CLIENT_ID}" in out
    assert re.search(r"expires in 59m \d\ds", out)
    assert "via authorization_code" in out
    assert_no_secret(out, cache)
    assert cache.read_bytes() == before


def test_show_json_is_structured_and_secret_free(capsys, cache):
    """Show --json gives accounts with their tokens and expiry, and no secret."""
    code, out, _ = run(capsys, "show", str(cache), "--json")
    assert code == 0
    document = json.loads(out)
    assert document["cache"] == str(cache)
    by_user = {a["username"]: a for a in document["accounts"]}
    assert set(by_user) == {ALICE, BOB}
    bob = by_user[BOB]
    assert bob["home_account_id"] == LocalAuthority().home_account_id(BOB)
    assert bob["sign_ins"][0]["account_source"] == "authorization_code"
    assert {(t["type"], t["client_id"]) for t in bob["tokens"]} == {
        (kind, client)
        for kind in ("AccessToken", "RefreshToken", "IdToken")
        for client in (DEFAULT_CLIENT_ID, OTHER_CLIENT_ID)
    }
    access = [t for t in bob["tokens"] if t["type"] == "AccessToken"]
    assert all(3500 < t["expires_in"] <= 3600 and t["expired"] is False for t in access)
    assert {a["client_id"] for a in document["apps"]} == {DEFAULT_CLIENT_ID, OTHER_CLIENT_ID}
    assert_no_secret(out, cache)


def test_show_reads_a_cache_written_by_azure_cli_or_msal_extensions(capsys, foreign_cache):
    """An indent=4 cache with peers' sections and fields is listed and left byte for byte."""
    before = foreign_cache.read_bytes()
    code, out, _ = run(capsys, "show", str(foreign_cache))
    assert code == 0
    assert ALICE in out
    assert f"client {AZURE_CLI_CLIENT_ID}" in out
    assert "scopes https://management.core.windows.net//.default" in out
    assert "other sections (kept as they are): ForeignSection (2 entries)" in out
    assert "eyJ1aWQiOiJ4In0" not in out  # client_info is not among the fields shown
    assert_no_secret(out, foreign_cache)
    assert foreign_cache.read_bytes() == before


def test_show_marks_expired_access_tokens(capsys, cache):
    """An access token past its expiry is shown as expired, with how long ago."""
    state = json.loads(cache.read_bytes())
    for entry in state["AccessToken"].values():
        entry["expires_on"] = str(int(time.time()) - 7200)
    cache.write_text(json.dumps(state))
    code, out, _ = run(capsys, "show", str(cache))
    assert code == 0
    assert out.count("expired 2h 00m ago") + out.count("expired 2h 01m ago") == 3


def test_show_defaults_to_the_environment_variable(capsys, cache, monkeypatch):
    """Without PATH, show reads the default location (here MSAL_PERSIST_CACHE)."""
    monkeypatch.setenv("MSAL_PERSIST_CACHE", str(cache))
    code, out, _ = run(capsys, "show")
    assert code == 0
    assert out.startswith(f"cache: {cache}\n")


def test_show_takes_no_lock_and_writes_nothing(capsys, cache):
    """Show works while another process holds the lock, and creates or changes no file."""
    with lock_held_by_another_process(cache):
        before = listing(cache.parent)
        started = time.monotonic()
        code, _, _ = run(capsys, "show", str(cache))
        assert code == 0
        assert time.monotonic() - started < 5
        assert listing(cache.parent) == before


def test_show_missing_file_exits_3(capsys, tmp_path):
    """A missing file is a one-line error and exit 3, and nothing is created."""
    missing = tmp_path / "nowhere" / "token_cache.json"
    code, out, err = run(capsys, "show", str(missing))
    assert (code, out) == (3, "")
    assert err == f"msal-persist: error: {missing}: no such file: nothing is cached here\n"
    assert not missing.parent.exists()


def test_show_default_location_missing_exits_3(capsys):
    """With nothing signed in at the default location, show says so and exits 3."""
    code, _, err = run(capsys, "show")
    assert code == 3
    assert "token_cache.json: no such file" in err


def test_show_directory_instead_of_file_exits_3(capsys, tmp_path):
    """A directory given as the cache file exits 3."""
    code, _, err = run(capsys, "show", str(tmp_path))
    assert code == 3
    assert err == f"msal-persist: error: {tmp_path}: it names a directory, not a file\n"


def test_show_path_through_a_regular_file_exits_3(capsys, cache):
    """A path whose directory part is a regular file (ENOTDIR) has no cache: exit 3."""
    before = cache.read_bytes()
    code, _, err = run(capsys, "show", f"{cache}/token_cache.json")
    assert code == 3
    assert "a component of the path is not a directory" in err
    assert cache.read_bytes() == before


def test_show_unreadable_symlink_loop_exits_4(capsys, symlink_loop):
    """A path that cannot be read even as root (a symlink loop, ELOOP) exits 4."""
    code, _, err = run(capsys, "show", str(symlink_loop))
    assert code == 4
    assert err == (
        f"msal-persist: error: {symlink_loop}: cannot read: Too many levels of symbolic links\n"
    )


def test_show_fifo_is_refused_without_blocking(capsys, tmp_path):
    """A FIFO in place of the cache is refused at once (exit 3), not opened."""
    fifo = tmp_path / "token_cache.json"
    os.mkfifo(fifo)
    code, _, err = run(capsys, "show", str(fifo))
    assert code == 3
    assert "is not a regular file" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"AccessToken": {"truncated', "not valid JSON (Unterminated string"),
        (b"", "the file is empty"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b'{"Account": []}', "section Account is not a mapping of entries"),
        (b'{"a": "\xff"}', "not UTF-8 text"),
        (b"[" * 100_000, "JSON nested too deeply"),
    ],
)
def test_show_content_that_is_no_cache_exits_3_and_is_left_alone(capsys, corrupt, content, problem):
    """Show reports bad content (exit 3) but never moves, quarantines or rewrites it."""
    corrupt.write_bytes(content)
    before = listing(corrupt.parent)
    code, out, err = run(capsys, "show", str(corrupt))
    assert (code, out) == (3, "")
    assert err.startswith(f"msal-persist: error: {corrupt}: not an msal token cache: {problem}")
    assert err.count("\n") == 1
    assert listing(corrupt.parent) == before


# -- doctor ---------------------------------------------------------------------------------


def doctor(capsys, *argv: str) -> tuple[int, dict[str, str], str]:
    """Run doctor; check its line format; return the status and {check: "STATUS detail"}."""
    code, out, err = run(capsys, "doctor", *argv)
    return code, doctor_checks(out), err


def test_doctor_passes_a_healthy_cache(capsys, cache):
    """A private, valid cache with no lock passes every check (exit 0)."""
    code, checks, err = doctor(capsys, str(cache))
    assert (code, err) == (0, "")
    assert list(checks) == [
        "location",
        "directory",
        "directory permissions",
        "file",
        "file permissions",
        "content",
        "size",
        "lock",
        "leftovers",
    ]
    assert all(v.startswith("OK") for v in checks.values()), checks
    assert "mode 0600, owned by you" in checks["file permissions"]
    assert "2 accounts, 9 tokens, 2 apps" in checks["content"]
    assert "13 entries" in checks["size"]
    assert "not held" in checks["lock"]


def test_doctor_warns_about_group_and_other_access_with_the_chmod_fix(capsys, cache):
    """Group/other bits on the file and directory are WARNs with chmod fixes; exit stays 0."""
    cache.chmod(0o644)
    cache.parent.chmod(0o750)
    code, checks, _ = doctor(capsys, str(cache))
    assert code == 0
    assert checks["file permissions"].startswith("WARN mode 0644")
    assert "group and others can access your tokens" in checks["file permissions"]
    assert f"fix: chmod 600 {cache}" in checks["file permissions"]
    assert checks["directory permissions"].startswith("WARN mode 0750")
    assert f"fix: chmod 700 {cache.parent}" in checks["directory permissions"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644  # doctor only reports


def test_doctor_fails_a_read_only_cache(capsys, cache):
    """A read-only file cannot take new sign-ins: FAIL, exit 1."""
    cache.chmod(0o400)
    code, checks, _ = doctor(capsys, str(cache))
    assert code == 1
    assert checks["file permissions"].startswith("FAIL mode 0400: read-only")
    assert f"fix: chmod 600 {cache}" in checks["file permissions"]


def test_doctor_fails_corrupt_json_and_leaves_it_untouched(capsys, corrupt):
    """Invalid JSON is a FAIL (exit 1) with a fix; the file is not moved or changed."""
    before = listing(corrupt.parent)
    code, checks, _ = doctor(capsys, str(corrupt))
    assert code == 1
    assert checks["content"].startswith("FAIL not an msal token cache: not valid JSON")
    assert (
        f"fix: the next msal-persist writer sets it aside as {corrupt.name}.corrupt-"
        in (checks["content"])
    )
    assert listing(corrupt.parent) == before


def test_doctor_missing_file_is_a_warning(capsys, cache_path):
    """No file yet is a WARN (nothing cached, or a wrong path), not a failure."""
    code, checks, _ = doctor(capsys, str(cache_path))
    assert code == 0
    assert checks["file"].startswith(f"WARN {cache_path} does not exist")
    assert "content" not in checks
    assert not cache_path.parent.exists()


def test_doctor_directory_instead_of_file_fails(capsys, tmp_path, monkeypatch):
    """MSAL_PERSIST_CACHE naming a directory fails the location check."""
    monkeypatch.setenv("MSAL_PERSIST_CACHE", str(tmp_path))
    code, checks, _ = doctor(capsys)
    assert code == 1
    assert checks["location"].startswith(f"FAIL {tmp_path}: it names a directory")


def test_doctor_unreadable_path_fails(capsys, symlink_loop):
    """A cache path that cannot be read (symlink loop) fails the file check."""
    code, checks, _ = doctor(capsys, str(symlink_loop))
    assert code == 1
    assert "cannot read: Too many levels of symbolic links" in checks["file"]
    assert checks["file"].startswith(f"FAIL {symlink_loop} (a symlink to loop-b)")


def test_doctor_names_a_live_lock_holder(capsys, cache):
    """A lock held by a running process is reported with its pid, and left alone."""
    with lock_held_by_another_process(cache) as holder:
        code, checks, _ = doctor(capsys, str(cache))
        assert code == 0
        assert checks["lock"].startswith(f"OK held by running process {holder.pid} for ")
        assert Path(f"{cache}.lockfile").exists()


def test_doctor_reports_a_stale_lock_without_removing_it(capsys, cache):
    """A lock file left by a dead process is a WARN; doctor does not delete it."""
    dead = finished_worker()
    lock_file = Path(f"{cache}.lockfile")
    lock_file.write_text(f"{dead.pid} /usr/bin/az")
    code, checks, _ = doctor(capsys, str(cache))
    assert code == 0
    assert checks["lock"].startswith(
        f"WARN stale: left by process {dead.pid}, which is no longer running"
    )
    assert "fix: none needed" in checks["lock"]
    assert lock_file.read_text() == f"{dead.pid} /usr/bin/az"


def test_doctor_reports_leftovers_that_may_hold_tokens(capsys, cache):
    """Set-aside corrupt copies and temp files of dead writers are WARNs with an rm fix."""
    dead = finished_worker()
    copy = cache.with_name(f"{cache.name}.corrupt-20250101T000000Z")
    temp = cache.with_name(f".{cache.name}.{dead.pid}-abcd1234.tmp")
    copy.write_text("{")
    temp.write_text("{")
    code, checks, _ = doctor(capsys, str(cache))
    assert code == 0
    assert checks["leftovers"].startswith(
        "WARN 1 temp file of crashed writers and 1 set-aside copy"
    )
    assert (
        f"fix: delete them when you no longer need them: rm {temp} {copy}" in (checks["leftovers"])
    )
    assert copy.exists()
    assert temp.exists()


def test_doctor_warns_when_an_unsafe_runtime_dir_was_skipped(capsys, tmp_path, monkeypatch):
    """An XDG_RUNTIME_DIR that fails the safety checks is a location WARN with a fix."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o777)
    runtime.chmod(0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    code, checks, _ = doctor(capsys)
    assert code == 0
    assert checks["location"].startswith("WARN ")
    assert f"because XDG_RUNTIME_DIR={runtime} has mode 0777, not 0700" in checks["location"]
    assert "fix: make $XDG_RUNTIME_DIR a directory you own with mode 0700" in checks["location"]


def test_doctor_accepts_a_runtime_dir_cache(capsys, tmp_path, monkeypatch):
    """The default cache in a safe XDG_RUNTIME_DIR is OK and said to be wiped at logout."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    sign_in(runtime / "msal-persist" / "token_cache.json", ALICE)
    code, checks, _ = doctor(capsys)
    assert code == 0
    assert checks["location"] == (
        f"OK {runtime}/msal-persist/token_cache.json (in $XDG_RUNTIME_DIR: a tmpfs, wiped when "
        "your last session ends)"
    )
    assert all(v.startswith("OK") for v in checks.values()), checks


# -- clear ----------------------------------------------------------------------------------


def test_clear_with_yes_signs_everyone_out_for_every_process(capsys, cache):
    """Clear --yes deletes the cache; an app that had loaded it sees no account after."""
    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(cache))
    assert len(app.get_accounts()) == 2
    code, out, err = run(capsys, "clear", str(cache), "--yes")
    assert (code, err) == (0, "")
    assert out == f"cleared {cache}: deleted every token (2 accounts, 9 tokens, 2 apps)\n"
    assert not cache.exists()
    assert not Path(f"{cache}.lockfile").exists()
    assert app.get_accounts() == []


def test_clear_without_a_terminal_or_yes_refuses(capsys, cache):
    """Without --yes and with no terminal to ask on, clear exits 2 and changes nothing."""
    before = listing(cache.parent)
    code, out, err = run(capsys, "clear", str(cache))
    assert (code, out) == (2, "")
    assert err == (
        f"msal-persist: error: {cache}: stdin is not a terminal, so nobody can confirm: "
        "pass --yes\n"
    )
    assert listing(cache.parent) == before


def test_clear_asks_on_a_terminal_and_obeys_yes(cache):
    """On a terminal clear asks first; "y" deletes the cache."""
    code, output = run_on_terminal(["clear", str(cache)], "y")
    assert code == 0, output
    assert f"Delete every token (2 accounts, 9 tokens, 2 apps) in {cache}? [y/N]" in output
    assert f"cleared {cache}" in output
    assert not cache.exists()


def test_clear_asks_on_a_terminal_and_obeys_no(cache):
    """On a terminal, any answer but yes leaves the cache as it was and exits 1."""
    before = cache.read_bytes()
    code, output = run_on_terminal(["clear", str(cache)], "n")
    assert code == 1, output
    assert f"nothing changed in {cache}" in output
    assert cache.read_bytes() == before


def test_clear_confirmation_read_from_stdin_in_process(capsys, cache, monkeypatch):
    """The prompt goes to stderr and the answer is read from stdin when it is a terminal."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    code, out, err = run(capsys, "clear", str(cache))
    assert code == 0
    assert err.endswith("[y/N] ")
    assert out.startswith("cleared ")
    assert not cache.exists()


def test_clear_waits_for_the_lock_and_gives_up_with_exit_5(capsys, cache):
    """While another process holds the lock past --lock-timeout, clear exits 5, no change."""
    before = cache.read_bytes()
    with lock_held_by_another_process(cache) as holder:
        started = time.monotonic()
        code, out, err = run(capsys, "clear", str(cache), "--yes", "--lock-timeout", "0.3")
        waited = time.monotonic() - started
    assert (code, out) == (5, "")
    assert 0.3 <= waited < 10
    assert err == (
        f"msal-persist: error: {cache}: process {holder.pid} held the lock "
        f"({cache.name}.lockfile) for more than 0.3 s; nothing changed\n"
    )
    assert cache.read_bytes() == before


def test_clear_missing_file_exits_3_and_creates_nothing(capsys, cache_path):
    """Clear on a missing cache exits 3 without creating a directory or a lock file."""
    code, _, err = run(capsys, "clear", str(cache_path), "--yes")
    assert code == 3
    assert "no such file" in err
    assert not cache_path.parent.exists()


def test_clear_removes_a_corrupt_cache(capsys, corrupt):
    """Clear is the way out of a corrupt cache: it deletes the file and says what it was."""
    code, out, _ = run(capsys, "clear", str(corrupt), "--yes")
    assert code == 0
    assert "deleted the file (it is not a valid token cache: not valid JSON" in out
    assert not corrupt.exists()


def test_clear_symlink_loop_exits_4(capsys, symlink_loop):
    """Clear on a path that cannot be read exits 4 without taking the lock."""
    code, _, err = run(capsys, "clear", str(symlink_loop), "--yes")
    assert code == 4
    assert "cannot read: Too many levels of symbolic links" in err
    assert not Path(f"{symlink_loop}.lockfile").exists()


# -- remove ---------------------------------------------------------------------------------


def test_remove_by_username_drops_every_entry_of_that_account_in_one_write(capsys, cache):
    """Remove matches the username case-insensitively and removes all its entries at once."""
    bob_id = LocalAuthority().home_account_id(BOB)
    with replacements_of(cache) as writes:
        code, out, err = run(capsys, "remove", BOB.upper(), str(cache), "--yes")
    assert (code, err) == (0, "")
    assert len(writes) == 1
    assert out == (
        f"removed {BOB} (home account id {bob_id}) from {cache}: 1 account entry, "
        "2 access tokens, 2 refresh tokens, 2 ID tokens\n"
    )
    state = json.loads(cache.read_bytes())
    for section in ("Account", "IdToken", "AccessToken", "RefreshToken"):
        assert state[section]
        assert all(e["home_account_id"] != bob_id for e in state[section].values())
    assert {e["client_id"] for e in state["AppMetadata"].values()} == {
        DEFAULT_CLIENT_ID,
        OTHER_CLIENT_ID,
    }
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_remove_by_home_account_id_keeps_the_other_account_usable(capsys, cache):
    """After removing one account by id, msal still gets the other's token from the cache."""
    authority = LocalAuthority()
    code, _, _ = run(capsys, "remove", authority.home_account_id(ALICE), str(cache), "-y")
    assert code == 0
    app = authority.public_client(token_cache=PersistedTokenCache(cache))
    (account,) = app.get_accounts()
    assert account["username"] == BOB
    result = app.acquire_token_silent(DEFAULT_SCOPES, account)
    assert result is not None
    assert result["token_source"] == "cache"
    assert authority.token_endpoint_hits == 0


def test_remove_keeps_peers_sections_and_fields(capsys, foreign_cache):
    """Removing from an Azure CLI style cache keeps foreign sections and app metadata."""
    code, _, _ = run(capsys, "remove", ALICE, str(foreign_cache), "--yes")
    assert code == 0
    state = json.loads(foreign_cache.read_bytes())
    assert state["ForeignSection"] == {"some-key": {"value": 1}, "other-key": {"value": 2}}
    assert state["AppMetadata"]
    assert not state["Account"]
    assert not state["AccessToken"]


def test_remove_unknown_account_exits_6_and_changes_nothing(capsys, cache):
    """An account that is not in the cache exits 6; the error does not echo the name."""
    before = listing(cache.parent)
    code, out, err = run(capsys, "remove", "carol@example.test", str(cache), "--yes")
    assert (code, out) == (6, "")
    assert err == (
        f"msal-persist: error: {cache}: no account matches; `msal-persist show` lists them\n"
    )
    assert listing(cache.parent) == before


def test_remove_without_a_terminal_or_yes_refuses(capsys, cache):
    """Without --yes and with no terminal, remove exits 2 and changes nothing."""
    before = cache.read_bytes()
    code, _, err = run(capsys, "remove", ALICE, str(cache))
    assert code == 2
    assert "pass --yes" in err
    assert cache.read_bytes() == before


def test_remove_asks_on_a_terminal(cache):
    """On a terminal remove names the account it will remove and acts on "y"."""
    code, output = run_on_terminal(["remove", ALICE, str(cache)], "y")
    assert code == 0, output
    assert f"Remove {ALICE} (home account id " in output
    assert ALICE not in cache.read_text()


def test_remove_from_a_read_only_file_exits_4_and_changes_nothing(capsys, cache):
    """A read-only cache is not replaced: exit 4, same bytes, same mode."""
    before = cache.read_bytes()
    cache.chmod(0o400)
    code, _, err = run(capsys, "remove", ALICE, str(cache), "--yes")
    assert code == 4
    assert err == (
        f"msal-persist: error: {cache}: cannot write: the file is read-only (mode 0400)\n"
    )
    assert cache.read_bytes() == before
    assert stat.S_IMODE(cache.stat().st_mode) == 0o400


def test_remove_waits_for_the_lock_and_gives_up_with_exit_5(capsys, cache):
    """While another process holds the lock, remove exits 5 and the file keeps its bytes."""
    before = cache.read_bytes()
    with lock_held_by_another_process(cache) as holder:
        code, _, err = run(capsys, "remove", ALICE, str(cache), "-y", "--lock-timeout", "0.2")
    assert code == 5
    assert f"process {holder.pid} held the lock" in err
    assert cache.read_bytes() == before


def test_remove_proceeds_once_the_lock_is_released(capsys, cache):
    """Remove waits for a holder that releases within --lock-timeout, then succeeds."""
    with lock_held_by_another_process(cache) as holder:
        assert holder.stdin is not None
        holder.stdin.close()  # the holder releases and exits while we wait
        code, _, _ = run(capsys, "remove", ALICE, str(cache), "-y", "--lock-timeout", "30")
    assert code == 0
    assert ALICE not in cache.read_text()


def test_remove_from_corrupt_or_missing_cache(capsys, corrupt, tmp_path):
    """Remove exits 3 on invalid JSON (file untouched) and on a missing file."""
    before = listing(corrupt.parent)
    code, _, err = run(capsys, "remove", ALICE, str(corrupt), "--yes")
    assert code == 3
    assert "not an msal token cache: not valid JSON" in err
    assert listing(corrupt.parent) == before
    code, _, _ = run(capsys, "remove", ALICE, str(tmp_path / "absent.json"), "--yes")
    assert code == 3


# -- demo -----------------------------------------------------------------------------------

DEMO_LINE = re.compile(r"^pid (\d+) +(signed in|cache|refreshed) +(\d+\.\d) ms$")


def check_demo_output(out: str, processes: int, source: str) -> list[str]:
    lines = out.splitlines()
    rows = [DEMO_LINE.match(line) for line in lines[1 : 1 + processes]]
    assert all(rows), lines
    sources = [row.group(2) for row in rows if row]
    assert sources == ["signed in"] + [source] * (processes - 1)
    pids = {row.group(1) for row in rows if row}
    assert len(pids) == processes
    assert str(os.getpid()) not in pids  # real separate interpreters
    later = processes - 1
    assert (
        f"single sign-on: yes: 1 sign-in, {later} of {later} later processes got a token "
        "without signing in"
    ) in lines
    return lines


def test_demo_shares_one_sign_in_between_processes(capsys, tmp_path, monkeypatch):
    """demo: one process signs in, the others hit the cache; its temp dir is removed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    started = time.monotonic()
    code, out, err = run(capsys, "demo")
    assert (code, err) == (0, ""), out
    assert time.monotonic() - started < 30
    lines = check_demo_output(out, 4, "cache")
    assert "token endpoint hits: 1 (device code: 1)" in lines
    assert "cache hits: 3, refreshes: 0" in lines
    assert any(re.fullmatch(r"lock waits: \d+ \(\d+\.\d ms in total\)", line) for line in lines)
    assert any(line.endswith("(removed with its temporary directory)") for line in lines)
    assert list(tmp_path.iterdir()) == []


def test_demo_refreshes_when_access_tokens_are_short_lived(capsys, tmp_path):
    """With a short token lifetime later processes refresh with the shared refresh token."""
    cache = tmp_path / "kept" / "token_cache.json"
    code, out, _ = run(capsys, "demo", "-n", "3", "--token-lifetime", "60", "--cache", str(cache))
    assert code == 0, out
    lines = check_demo_output(out, 3, "refreshed")
    assert "token endpoint hits: 3 (device code: 1, refresh token: 2)" in lines
    assert f"cache file: {cache} (kept)" in lines
    code, out, _ = run(capsys, "show", str(cache))
    assert code == 0
    assert "via device_code" in out
    assert re.search(r"expires in \d+s \(renewed at next use\)", out), out


def test_demo_fails_when_the_shared_cache_cannot_be_written(capsys, tmp_path):
    """If the sign-in cannot be saved, demo reports the failure and exits 1."""
    cache = tmp_path / "token_cache.json"
    cache.write_text("{}")
    cache.chmod(0o400)
    code, out, _ = run(capsys, "demo", "--cache", str(cache))
    assert code == 1
    assert re.search(r"^pid \d+ +failed .*read-only", out, re.MULTILINE), out
    assert "single sign-on: NO" in out
    assert cache.read_text() == "{}"


# -- real subprocesses: the console script and python -m ------------------------------------


@pytest.mark.parametrize("launcher", ["console script", "python -m"])
def test_demo_runs_as_a_program(launcher, tmp_path):
    """Demo works through the installed msal-persist script and python -m msal_persist."""
    prefix = (
        [str(console_script())]
        if launcher == "console script"
        else [sys.executable, "-m", "msal_persist"]
    )
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    result = subprocess.run(
        [*prefix, "demo", "--processes", "3"],
        capture_output=True,
        text=True,
        env={**worker_env(), "TMPDIR": str(env_tmp)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    check_demo_output(result.stdout, 3, "cache")
    assert list(env_tmp.iterdir()) == []


@pytest.mark.parametrize("launcher", ["console script", "python -m"])
def test_show_runs_as_a_program(launcher, cache, corrupt):
    """Show works as a program and exits with the documented status on bad input."""
    prefix = (
        [str(console_script())]
        if launcher == "console script"
        else [sys.executable, "-m", "msal_persist"]
    )
    result = run_command([*prefix, "show", str(cache), "--json"])
    assert result.returncode == 0, result.stderr
    assert {a["username"] for a in json.loads(result.stdout)["accounts"]} == {ALICE, BOB}
    assert_no_secret(result.stdout, cache)
    before = corrupt.read_bytes()
    result = run_command([*prefix, "show", str(corrupt)])
    assert result.returncode == 3
    assert result.stderr.startswith(f"msal-persist: error: {corrupt}: not an msal token cache")
    assert corrupt.read_bytes() == before
