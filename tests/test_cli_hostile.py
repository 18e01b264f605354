"""The CLI against hostile file system objects and text: escaped output, no hang, no redirect.

Exit codes used here (see the table in ``msal_persist._cli``): ``doctor`` exits 1 when a
check fails, whatever the object; ``show`` exits 3 for a FIFO or a device at the cache path
(no cache there: another non-regular file) and 4 for a symbolic link (msal-persist neither
reads nor writes through links); ``clear``/``remove`` exit 4 when the lock file is one that
writers refuse (the library's ``CacheFileError``), never 5: nothing is waited on.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import doctor_checks, run
from msal_persist import PersistedTokenCache
from msal_persist._text import printable
from msal_persist.testing import LocalAuthority
from process_helpers import worker_env

ALICE = "alice@example.test"
HOSTILE_DIR = "evil\n\x1b[31mdir\u2028"
"""A directory name that would forge a line and turn the terminal red if printed raw."""

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
DURATION = re.compile(r"\b\d+[dhms](?: \d+[hms])?\b")
SUBPROCESS_TIMEOUT = 30.0
"""Bound on one command run as a program; a hang fails the test instead of stalling it."""

# Fields of a cache file another tool (or an attacker) wrote, and benign stand-ins of the
# same shape: printed, the hostile ones must read exactly like the stand-ins, escaped.
HOSTILE_FIELDS = {
    "username": ("mallory@example.test\nOK    location: forged\x1b[2J", "mallory-plain"),
    "client_id": ("client\x1b]0;pwned\x07\u2028id", "client-plain"),
    "environment": ("login.example\r\x85test", "env-plain"),
}
HOSTILE_SECTION = ("Evil\nSection\x1b[0m", "Plain-section")


# -- helpers --------------------------------------------------------------------------------


def run_program(*argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``python -m msal_persist`` with a timeout; return the result and seconds taken."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "msal_persist", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )
    return result, time.monotonic() - started


def sign_in(path: Path, username: str = ALICE) -> None:
    """Sign ``username`` in through a real msal app on a PersistedTokenCache at ``path``."""
    authority = LocalAuthority()
    app = authority.public_client(token_cache=PersistedTokenCache(path))
    authority.sign_in(app, username=username)


def assert_printable(text: str) -> None:
    """No control character but the newlines that end lines."""
    found = CONTROL.findall(text.replace("\n", ""))
    assert not found, f"raw control characters {found!r} in {text!r}"


def doctor(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, dict[str, str]]:
    code, out, _ = run(capsys, "doctor", str(path))
    assert_printable(out)
    return code, doctor_checks(out)


def make_special(path: Path, kind: str) -> None:
    """Make a FIFO, a socket or a device (a copy of /dev/zero) at ``path``."""
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "socket":
        os.mknod(path, stat.S_IFSOCK | 0o600)
    else:
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            pytest.skip("making a device node needs CAP_MKNOD")


def shell_words(command: str) -> list[bytes]:
    """How bash splits ``command``'s arguments (after the command name), as bytes."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    result = subprocess.run(
        [bash, "-c", f"set -- {command}; shift; printf '%s\\0' \"$@\""],
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=True,
    )
    return result.stdout.split(b"\0")[:-1]


def stamp(path: Path) -> tuple[bytes, int, int]:
    """Bytes, mtime and inode of ``path``, to prove nothing wrote to it."""
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_ino


class LinkedLock:
    """A lock file planted as a symlink to a file of the user's (or to nothing)."""

    def __init__(self, cache: Path, tmp_path: Path, *, dangling: bool) -> None:
        self.target = tmp_path / "precious.txt"
        self.before: tuple[bytes, int, int] | None = None
        if not dangling:
            self.target.write_text("my notes\n")
            os.utime(self.target, ns=(1_000_000_000, 1_000_000_000))
            self.before = stamp(self.target)
        self.lock = Path(f"{cache}.lockfile")
        self.lock.symlink_to(self.target)

    def assert_untouched(self) -> None:
        """The link is still there and its target (if any) was neither written nor made."""
        assert self.lock.is_symlink()
        if self.before is None:
            assert not os.path.lexists(self.target)
        else:
            assert stamp(self.target) == self.before


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths of FIFOs, sockets and devices a test makes; all are removed afterwards."""
    made: list[Path] = []
    yield made
    for path in made:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    assert not [p for p in tmp_path.rglob("*") if p.is_fifo() or p.is_char_device()]


@pytest.fixture
def hostile_cache(tmp_path: Path) -> Path:
    """A real cache (one account, one client id) in a directory named to forge lines."""
    directory = tmp_path / HOSTILE_DIR
    directory.mkdir()
    directory.chmod(0o700)
    path = directory / "token_cache.json"
    sign_in(path)
    return path


@pytest.fixture
def plain_cache(tmp_path: Path) -> Path:
    """The same kind of cache in a directory with an ordinary name."""
    directory = tmp_path / "plain"
    directory.mkdir()
    directory.chmod(0o700)
    path = directory / "token_cache.json"
    sign_in(path)
    return path


def with_fields(source: Path, target: Path, which: int) -> Path:
    """Copy ``source`` to ``target`` with the hostile (0) or benign (1) fields written in."""
    state = json.loads(source.read_bytes())
    for section in state.values():
        for entry in section.values():
            for name, values in HOSTILE_FIELDS.items():
                if name in entry:
                    entry[name] = values[which]
    state[HOSTILE_SECTION[which]] = {"k": {"v": 1}}
    target.parent.mkdir(mode=0o700, exist_ok=True)
    target.write_text(json.dumps(state))
    target.chmod(0o600)
    return target


@pytest.fixture
def field_caches(plain_cache: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two caches of the same shape: hostile fields, and benign stand-ins for them."""
    hostile = with_fields(plain_cache, tmp_path / "fields" / "hostile.json", 0)
    benign = with_fields(plain_cache, tmp_path / "fields" / "benign.json", 1)
    return hostile, benign


def escaped(text: str) -> str:
    """``text`` (benign output) with each benign stand-in replaced by its hostile value, escaped."""
    for hostile, benign in (*HOSTILE_FIELDS.values(), HOSTILE_SECTION):
        text = text.replace(benign, printable(hostile))
    return text


# -- printable output: a hostile directory name ---------------------------------------------


def test_doctor_escapes_a_hostile_directory_name(capsys, hostile_cache, plain_cache):
    """Doctor prints a path holding a newline and ESC escaped, one line per check."""
    code, out, err = run(capsys, "doctor", str(hostile_cache))
    _, plain_out, _ = run(capsys, "doctor", str(plain_cache))
    assert (code, err) == (0, "")
    assert_printable(out)
    assert out.count("\n") == plain_out.count("\n") == 10
    checks = doctor_checks(out)
    assert checks["location"] == f"OK {printable(hostile_cache)} (given on the command line)"
    assert checks["file"].startswith(f"OK {printable(hostile_cache)}: a regular file")
    assert (
        checks["directory"]
        == f"OK {printable(hostile_cache.parent)} exists and you can write in it"
    )


def test_doctor_fix_for_a_hostile_path_is_one_line_that_bash_reads_back(capsys, hostile_cache):
    """A fix naming a path with control characters is one escaped line naming that very path."""
    hostile_cache.chmod(0o644)
    _, checks = doctor(capsys, hostile_cache)
    fix = checks["file permissions"].partition("\nfix: ")[2]
    assert fix.startswith("chmod 600 $'")
    assert shell_words(fix) == [b"600", os.fsencode(hostile_cache)]


def test_show_escapes_a_hostile_directory_name(capsys, hostile_cache, plain_cache):
    """Show's text names the hostile path escaped and has as many lines as for a plain one."""
    code, out, err = run(capsys, "show", str(hostile_cache))
    _, plain_out, _ = run(capsys, "show", str(plain_cache))
    assert (code, err) == (0, "")
    assert_printable(out)
    assert out.split("\n", 1)[0] == f"cache: {printable(hostile_cache)}"
    assert DURATION.sub("T", out.split("\n", 1)[1]) == DURATION.sub(
        "T", plain_out.split("\n", 1)[1]
    )


def test_show_json_keeps_a_hostile_path_exact_and_valid(capsys, hostile_cache):
    """Show --json stays valid JSON with no raw control character, and the path round-trips."""
    code, out, _ = run(capsys, "show", str(hostile_cache), "--json")
    assert code == 0
    assert_printable(out)
    assert json.loads(out)["cache"] == str(hostile_cache)


def test_path_escapes_a_hostile_environment_variable(capsys, hostile_cache, monkeypatch):
    """`path` prints the cache named by MSAL_PERSIST_CACHE escaped, on its own first line."""
    monkeypatch.setenv("MSAL_PERSIST_CACHE", str(hostile_cache))
    code, out, _ = run(capsys, "path")
    assert code == 0
    assert_printable(out)
    assert out.split("\n")[0] == printable(hostile_cache)
    assert "chosen by rule 2 (environment)" in out.split("\n")[1]


def test_errors_escape_a_hostile_path(capsys, hostile_cache):
    """A one-line error about a hostile path stays one line, the path escaped."""
    missing = hostile_cache.with_name("missing\n\x1b[0m.json")
    code, out, err = run(capsys, "show", str(missing))
    assert (code, out) == (3, "")
    assert (
        err == f"msal-persist: error: {printable(missing)}: no such file: nothing is cached here\n"
    )


def test_clear_message_escapes_a_hostile_path(capsys, hostile_cache):
    """Clear's one line of output names the hostile path escaped."""
    code, out, _ = run(capsys, "clear", str(hostile_cache), "--yes")
    assert code == 0
    assert out == (
        f"cleared {printable(hostile_cache)}: deleted every token (1 account, 3 tokens, 1 app)\n"
    )
    assert not hostile_cache.exists()


def test_confirmation_prompt_escapes_a_hostile_path(capsys, hostile_cache, monkeypatch):
    """The prompt and the refusal on a terminal name the hostile path escaped."""

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    code, out, err = run(capsys, "clear", str(hostile_cache))
    assert (code, out) == (1, "")
    assert err == (
        f"Delete every token (1 account, 3 tokens, 1 app) in {printable(hostile_cache)}? "
        f"[y/N] msal-persist: nothing changed in {printable(hostile_cache)}\n"
    )
    assert hostile_cache.exists()


# -- printable output: hostile fields in the cache ------------------------------------------


def test_show_escapes_hostile_fields(capsys, field_caches):
    """Username, client id, environment and section names with controls print escaped in place."""
    hostile, benign = field_caches
    code, out, err = run(capsys, "show", str(hostile))
    _, benign_out, _ = run(capsys, "show", str(benign))
    assert (code, err) == (0, "")
    assert_printable(out)
    expected = escaped(benign_out.replace(str(benign), str(hostile)))
    assert DURATION.sub("T", out) == DURATION.sub("T", expected)
    assert out.count("\n") == benign_out.count("\n")


def test_show_json_keeps_hostile_fields_exact(capsys, field_caches):
    """Show --json is valid JSON without raw controls and gives each hostile field back exactly."""
    hostile, _ = field_caches
    code, out, _ = run(capsys, "show", str(hostile), "--json")
    assert code == 0
    assert_printable(out)
    document = json.loads(out)
    (account,) = document["accounts"]
    assert account["username"] == HOSTILE_FIELDS["username"][0]
    assert {t["client_id"] for t in account["tokens"]} == {HOSTILE_FIELDS["client_id"][0]}
    assert {t["environment"] for t in account["tokens"]} == {HOSTILE_FIELDS["environment"][0]}
    assert document["other_sections"] == {HOSTILE_SECTION[0]: 1}


def test_doctor_escapes_hostile_section_names(capsys, field_caches):
    """Doctor's content check names other tools' sections escaped, on one line."""
    hostile, _ = field_caches
    code, checks = doctor(capsys, hostile)
    assert code == 0
    assert checks["content"].endswith(
        f"also keeps sections of other tools: {printable(HOSTILE_SECTION[0])}"
    )


def test_remove_escapes_a_hostile_username(capsys, field_caches):
    """Remove, given a username with a newline and ESC, reports it escaped on one line."""
    hostile, _ = field_caches
    username = HOSTILE_FIELDS["username"][0]
    code, out, err = run(capsys, "remove", username, str(hostile), "--yes")
    assert (code, err) == (0, "")
    assert_printable(out)
    assert out.count("\n") == 1
    assert out.startswith(f"removed {printable(username)} (home account id ")


# -- doctor: the lock file ------------------------------------------------------------------


@pytest.mark.parametrize("dangling", [False, True])
def test_doctor_fails_a_symlinked_lock_file_and_leaves_its_target_alone(
    capsys, plain_cache, tmp_path, dangling
):
    """A symlink as lock file (dangling or not) is a FAIL with an rm fix; nothing is written."""
    linked = LinkedLock(plain_cache, tmp_path, dangling=dangling)
    lock, target = linked.lock, linked.target
    code, checks = doctor(capsys, plain_cache)
    assert code == 1
    assert checks["lock"] == (
        f"FAIL {lock} is a symbolic link (to {target}), which no MSAL tool creates: writers "
        f"refuse it, so no sign-in can be saved\nfix: rm {lock} (this removes the link, not its "
        "target)"
    )
    assert "next writer removes it" not in checks["lock"]
    linked.assert_untouched()


@pytest.mark.parametrize(
    ("kind", "word"), [("fifo", "a FIFO"), ("socket", "a socket"), ("device", "a character device")]
)
def test_doctor_fails_a_special_lock_file_without_blocking(plain_cache, specials, kind, word):
    """A FIFO, socket or device as lock file is a FAIL with an rm fix, reported at once."""
    lock = Path(f"{plain_cache}.lockfile")
    specials.append(lock)
    make_special(lock, kind)
    result, elapsed = run_program("doctor", str(plain_cache))
    assert result.returncode == 1, result.stderr
    assert elapsed < 10
    checks = doctor_checks(result.stdout)
    assert checks["lock"] == (
        f"FAIL {lock} is {word}, which no MSAL tool creates: writers refuse it, so no sign-in "
        f"can be saved\nfix: rm {lock}"
    )


def test_doctor_fails_a_lock_directory(capsys, plain_cache):
    """A directory as lock file is a FAIL: no writer can ever take the lock."""
    lock = Path(f"{plain_cache}.lockfile")
    lock.mkdir()
    code, checks = doctor(capsys, plain_cache)
    assert code == 1
    assert checks["lock"].startswith(f"FAIL {lock} is a directory, so no writer can ever take")


def test_doctor_fails_a_hard_linked_lock_file(capsys, plain_cache, tmp_path):
    """A lock file with a second name is a FAIL (writers refuse it); the other name is kept."""
    other = tmp_path / "other-name"
    other.write_text(f"{os.getpid()} python")
    lock = Path(f"{plain_cache}.lockfile")
    os.link(other, lock)
    code, checks = doctor(capsys, plain_cache)
    assert code == 1
    assert checks["lock"] == (
        f"FAIL {lock} has 2 names (hard links), which no MSAL tool creates: writers refuse it, "
        f"so no sign-in can be saved\nfix: rm {lock} (the other names stay)"
    )
    assert other.read_text() == f"{os.getpid()} python"


# -- doctor: the cache file and its directory -----------------------------------------------


def test_doctor_fails_a_symlinked_cache_and_names_its_target(capsys, tmp_path):
    """A symlink as cache file is a FAIL naming the target to use; it is not read through."""
    real = tmp_path / "target\x1b[1m" / "token_cache.json"
    sign_in(real)
    link = tmp_path / "cache" / "token_cache.json"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(real)
    code, checks = doctor(capsys, link)
    assert code == 1
    detail, _, fix = checks["file"].partition("\nfix: ")
    assert detail == (
        f"FAIL {link} (a symlink to {printable(real)}): msal-persist neither reads nor writes "
        "through links"
    )
    assert fix.startswith("use the path of its target instead: $'")
    assert shell_words(f"x {fix.rpartition(': ')[2]}") == [os.fsencode(real)]
    assert "content" not in checks


def test_doctor_fails_a_dangling_symlinked_cache_with_an_rm_fix(capsys, tmp_path):
    """A dangling symlink as cache file is a FAIL whose fix removes the link."""
    link = tmp_path / "cache" / "token_cache.json"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(tmp_path / "gone.json")
    code, checks = doctor(capsys, link)
    assert code == 1
    assert checks["file"] == (
        f"FAIL {link} (a symlink to {tmp_path / 'gone.json'}): it leads nowhere, and "
        "msal-persist neither reads nor writes through links\n"
        f"fix: remove the link (rm {link}); the next sign-in creates the file there"
    )
    assert not (tmp_path / "gone.json").exists()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_doctor_and_show_refuse_a_special_cache_file_without_blocking(tmp_path, specials, kind):
    """A FIFO or device as cache file: doctor FAILs (exit 1), show exits 3, both at once."""
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o700)
    path = directory / "token_cache.json"
    specials.append(path)
    make_special(path, kind)
    result, elapsed = run_program("doctor", str(path))
    assert result.returncode == 1, result.stderr
    assert elapsed < 10
    checks = doctor_checks(result.stdout)
    assert checks["file"].startswith(f"FAIL {path}: is not a regular file")
    assert "content" not in checks
    result, elapsed = run_program("show", str(path))
    assert (result.returncode, result.stdout) == (3, "")
    assert elapsed < 10
    assert result.stderr == f"msal-persist: error: {path}: is not a regular file\n"


def test_show_refuses_a_symlinked_cache_with_exit_4(capsys, plain_cache, tmp_path):
    """Show does not read through a symlink (as the library): exit 4, the target named."""
    link = tmp_path / "link.json"
    link.symlink_to(plain_cache)
    code, out, err = run(capsys, "show", str(link))
    assert (code, out) == (4, "")
    assert err == (
        f"msal-persist: error: {link}: cannot read: it is a symbolic link to {plain_cache}: "
        "msal-persist neither reads nor writes through links; use the path of its target "
        f"instead: {plain_cache}\n"
    )


def test_doctor_warns_about_a_hard_linked_cache_file(capsys, plain_cache, tmp_path):
    """A cache file with a second name is a WARN: the other name keeps old tokens."""
    os.link(plain_cache, tmp_path / "backup.json")
    code, checks = doctor(capsys, plain_cache)
    assert code == 0
    assert checks["file"].startswith(
        f"WARN {plain_cache}: a regular file with 2 names (hard links)"
    )
    assert (
        "each write replaces this name only, so the other names keep old tokens" in checks["file"]
    )
    assert (
        f"fix: find the other names (find / -samefile {plain_cache} 2>/dev/null)" in checks["file"]
    )
    assert checks["content"].startswith("OK a valid msal token cache")


@pytest.mark.parametrize(
    ("mode", "who"), [(0o770, "group"), (0o703, "others"), (0o777, "group and others")]
)
def test_doctor_fails_a_directory_others_can_write(capsys, plain_cache, mode, who):
    """A cache directory group or others can write (no sticky bit) is a FAIL with chmod 700."""
    plain_cache.parent.chmod(mode)
    code, checks = doctor(capsys, plain_cache)
    assert code == 1
    assert checks["directory permissions"] == (
        f"FAIL mode {mode:04o}, owned by you: {who} can rename files in it, so other users can "
        "replace your token cache with one holding their own account\n"
        f"fix: chmod 700 {plain_cache.parent}"
    )


def test_doctor_only_warns_about_a_sticky_shared_directory(capsys, plain_cache):
    """A sticky world-writable directory stays a WARN: others cannot replace your file."""
    plain_cache.parent.chmod(0o1777)
    code, checks = doctor(capsys, plain_cache)
    assert code == 0
    assert checks["directory permissions"].startswith("WARN mode 1777, owned by you: a shared")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_doctor_fails_a_directory_owned_by_another_user(capsys, plain_cache):
    """A cache directory owned by another user (not root) is a FAIL: its owner can swap the file."""
    os.chown(plain_cache.parent, 65534, 65534)
    code, checks = doctor(capsys, plain_cache)
    assert code == 1
    assert checks["directory permissions"].startswith(
        "FAIL mode 0700, owned by uid 65534, not you (0): its owner can replace your token "
        "cache with one holding their own account"
    )


def test_doctor_counts_set_aside_copies_and_says_how_many_are_kept(capsys, plain_cache):
    """Leftovers counts the set-aside copies and says writers keep at most 10."""
    for n in range(12):
        plain_cache.with_name(f"{plain_cache.name}.corrupt-20250101T0000{n:02d}Z").write_text("{")
    code, checks = doctor(capsys, plain_cache)
    assert code == 0
    assert checks["leftovers"].startswith(
        f"WARN 12 set-aside copies ({plain_cache.name}.corrupt-*; writers keep at most 10, "
        "deleting the oldest): they may hold tokens"
    )


# -- clear and remove against a hostile lock file -------------------------------------------


@pytest.mark.parametrize("command", ["clear", "remove"])
@pytest.mark.parametrize("dangling", [True, False])
def test_changes_refuse_a_symlinked_lock_file_at_once_with_exit_4(
    plain_cache, tmp_path, command, dangling
):
    """Clear/remove with a symlink as lock file exit 4 without waiting; no file is touched."""
    linked = LinkedLock(plain_cache, tmp_path, dangling=dangling)
    lock = linked.lock
    before = stamp(plain_cache)
    account = [ALICE] if command == "remove" else []
    result, elapsed = run_program(
        command, *account, str(plain_cache), "--yes", "--lock-timeout", "60"
    )
    assert (result.returncode, result.stdout) == (4, ""), result.stderr
    # Refused, not waited on: far less than the 60 s lock timeout, however loaded the host
    # (a 5 s bound on a 1 s timeout failed at load 40 from start-up time alone).
    assert elapsed < 30
    assert result.stderr.startswith(f"msal-persist: error: {lock}: cannot lock: ")
    assert "symbolic link" in result.stderr
    assert result.stderr.endswith("; nothing changed\n")
    assert result.stderr.count("\n") == 1
    assert stamp(plain_cache) == before
    linked.assert_untouched()
