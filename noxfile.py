"""Development sessions. ``nox`` alone runs what CI runs (see .ci/run)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox


def _find_pyenv_interpreters() -> None:
    # pyenv installs every version but puts only the global one on PATH; put 3.10-3.13 there
    # so that "every installed Python" means what it says, and never let uv download one.
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = [str(p / "bin") for p in sorted(root.glob("3.1[0-3].*")) if (p / "bin").is_dir()]
    os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


_find_pyenv_interpreters()

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests",
    "tests_oldest",
    "interop",
    "encryption",
    "redis",
    "examples",
    "docs",
]

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
OLDEST_PYTHON = "3.10"
# The lowest versions pyproject.toml declares; CI proves they still work.
OLDEST = ["msal==1.29.0", "portalocker==3.0.0", "platformdirs==4.0.0"]
ENCRYPTION_OLDEST = ["cryptography==42.0.0", "keyring==25.0.0"]
ROOT = Path(__file__).parent


_apt_updated = False


def _system_programs(session: nox.Session, programs: dict[str, str]) -> None:
    """Make sure each program (key) is on PATH, installing its Debian package (value).

    The sessions that prove a claim about a real component (the OS keyring, Redis) need its
    real server. On a fresh machine of CI's kind we are root with apt-get: install it there.
    Anywhere else, stop with the exact command to run; a missing server is never a skip.
    """
    global _apt_updated  # noqa: PLW0603 - one "apt-get update" per nox run
    missing = sorted(
        {package for program, package in programs.items() if not shutil.which(program)}
    )
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.error(f"this session needs: sudo apt-get update && sudo {' '.join(command)}")
    if not _apt_updated:
        session.run("apt-get", "update", "-qq", external=True)
        _apt_updated = True
    session.run(*command, external=True, env={"DEBIAN_FRONTEND": "noninteractive"})


def _install_tests(session: nox.Session, *extra: str, project: str = ".") -> None:
    session.install("--group", "tests", "-e", project, *extra)


COVERAGE_PYTHON = "3.10"
"""Coverage is measured once, on the fastest session: the other Pythons run the same tests
without its tracer, which the exhaustive interrupt test would otherwise run under twice."""


def _pytest(session: nox.Session, *paths: str) -> None:
    if session.name != f"tests-{COVERAGE_PYTHON}":
        session.run("python", "-m", "pytest", *paths, *session.posargs)
        return
    # Coverage follows subprocesses (patch = ["subprocess"]), so the multi-process tests count.
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *paths, *session.posargs)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--fail-under=0")


FAST_PYTHON = "3.12"
"""The Python whose test session installs the "fast" extra (orjson): the codec's other path
is proven there, on the newest dependencies, and the standard library's on the others,
without a whole extra run of the suite."""


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite on the newest dependencies (with orjson on FAST_PYTHON)."""
    _install_tests(session, project=".[fast]" if session.python == FAST_PYTHON else ".")
    _pytest(session, "tests")


@nox.session(python=OLDEST_PYTHON)
def tests_oldest(session: nox.Session) -> None:
    """Run the test suite on the oldest declared msal, portalocker and platformdirs."""
    _install_tests(session)
    session.install(*OLDEST)
    _pytest(session, "tests")


@nox.session(python=OLDEST_PYTHON)
def interop(session: nox.Session) -> None:
    """Real peers on one file: msal-extensions (both lock flavours), azure-identity, Azure CLI.

    Azure CLI (azure-cli-core pins portalocker 2) gets a virtual environment of its own,
    which the tests build.
    """
    _install_tests(session, "msal-extensions>=1.3", "portalocker<4", "azure-identity>=1.19")
    session.run("python", "-m", "pytest", "tests_interop", *session.posargs)


@nox.session(python="3.12")
def encryption(session: nox.Session) -> None:
    """The encryption extra against gnome-keyring's real Secret Service on a private D-Bus."""
    _system_programs(session, {"dbus-daemon": "dbus", "gnome-keyring-daemon": "gnome-keyring"})
    _install_tests(session, project=".[encryption]")
    session.run("python", "-m", "pytest", "tests_encryption", *session.posargs)
    # The floors pyproject.toml declares for the extra, on the same real keyring (the
    # multi-process proofs do not depend on these versions and run once, above).
    session.install(*ENCRYPTION_OLDEST)
    session.run(
        "python",
        "-m",
        "pytest",
        "tests_encryption",
        "--deselect=tests_encryption/test_encrypted_processes.py",
        *session.posargs,
    )


@nox.session(python="3.12")
def redis(session: nox.Session) -> None:
    """The Redis store against a real redis-server (installed from Debian when missing)."""
    _system_programs(session, {"redis-server": "redis-server"})
    _install_tests(session, project=".[redis]")
    session.run("python", "-m", "pytest", "tests_redis", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("--group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check src/ with mypy --strict."""
    session.install("--group", "typecheck", "-e", ".")
    session.run("mypy")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every script in examples/ against a private temporary cache (and Redis server)."""
    _system_programs(session, {"redis-server": "redis-server"})
    session.install("-e", ".[redis]")
    tmp = Path(session.create_tmp()) / "examples"
    shutil.rmtree(tmp, ignore_errors=True)
    for script in sorted((ROOT / "examples").glob("*.py")):
        tmp.mkdir(parents=True, exist_ok=True)
        env = {"MSAL_PERSIST_CACHE": str(tmp / script.stem / "token_cache.json")}
        session.run("python", str(script), env=env)
        shutil.rmtree(tmp)


@nox.session(python="3.12")
def docs(session: nox.Session) -> None:
    """Build the documentation site (warnings are errors) and run its examples."""
    session.install("--group", "docs", "-e", ".[redis]")  # autodoc imports RedisStore
    build = Path(session.create_tmp()) / "docs"
    shutil.rmtree(build, ignore_errors=True)
    for builder in ("html", "doctest"):
        session.run(
            "sphinx-build", "-W", "--keep-going", "-q", "-b", builder,
            "docs", str(build / builder),
        )  # fmt: skip
    session.log(f"site: {build / 'html' / 'index.html'}")


@nox.session
def demo(session: nox.Session) -> None:
    """Install and run the README's main job."""
    session.install(".")
    session.run("msal-persist", "demo", *session.posargs)


def _tmpfs_directory() -> str | None:
    """A writable directory on tmpfs: $XDG_RUNTIME_DIR if it is one, else /dev/shm."""
    candidates = [os.environ.get("XDG_RUNTIME_DIR", ""), "/dev/shm"]  # noqa: S108 - only read
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            tmpfs = [line.split()[1] for line in mounts if line.split()[2] == "tmpfs"]
    except OSError:
        return None
    for candidate in filter(None, candidates):
        real = os.path.realpath(candidate)
        if os.access(real, os.W_OK) and any(
            real == mount or real.startswith(mount.rstrip("/") + "/") for mount in tmpfs
        ):
            return real
    return None


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks side by side with msal-extensions and the documented recipe."""
    _system_programs(session, {"dbus-daemon": "dbus", "gnome-keyring-daemon": "gnome-keyring"})
    extras = "fast,encryption" if "--fast" in session.posargs else "encryption"
    session.install(f".[{extras}]", "msal-extensions", "matplotlib")
    args = [a for a in session.posargs if a != "--fast"]
    quick = ["--quick"] if "--quick" in args else []
    session.run("python", "benchmarks/run.py", *args, env={"PYTHONHASHSEED": "0"})
    # Again on tmpfs, where the default location ($XDG_RUNTIME_DIR) lives: no fsync to hide
    # behind, so every extra step of the lock and write paths shows.
    tmpfs = _tmpfs_directory()
    if tmpfs is not None:
        session.run(
            "python",
            "benchmarks/run.py",
            *args,
            "--tmpdir",
            tmpfs,
            "--output",
            "benchmarks/results/latest-tmpfs.md",
            env={"PYTHONHASHSEED": "0"},
        )
    else:
        session.warn("no tmpfs directory found: the tmpfs run of benchmarks/run.py is left out")
    session.run("python", "benchmarks/charts.py")  # the figures the documentation shows
    session.run("python", "benchmarks/encryption_bench.py", *quick, env={"PYTHONHASHSEED": "0"})
    # The Redis store's rows: their own server, their own table (benchmarks/redis_bench.py).
    _system_programs(session, {"redis-server": "redis-server"})
    session.install(".[redis]")
    session.run("python", "benchmarks/redis_bench.py", *quick, env={"PYTHONHASHSEED": "0"})
    session.run("python", "benchmarks/stampede.py", *quick)
