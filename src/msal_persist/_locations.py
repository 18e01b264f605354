"""Where the token cache lives when the caller does not say.

One documented precedence, decided in one place (:func:`default_cache_path`):

1. an explicit path given by the caller;
2. the environment variable ``MSAL_PERSIST_CACHE``;
3. ``$XDG_RUNTIME_DIR/<app>/token_cache.json`` when ``XDG_RUNTIME_DIR`` is safe: an absolute
   path to a directory (not a symlink) owned by the current user with mode 0700, as the XDG
   Base Directory specification requires. It is a tmpfs wiped when the user's last session
   ends, the intent of msal's documented recipe;
4. otherwise the platformdirs user cache directory for ``<app>``, which persists across
   reboots.

msal's recipe joins ``os.getenv("XDG_RUNTIME_DIR", "")`` with a file name, which silently puts
tokens in the current directory when the variable is unset; rule 3 never does that.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import platformdirs

from ._errors import CacheLocationError

__all__ = ["CACHE_FILE_NAME", "DEFAULT_APP_NAME", "ENV_VAR", "CacheLocation", "default_cache_path"]

ENV_VAR: Final = "MSAL_PERSIST_CACHE"
DEFAULT_APP_NAME: Final = "msal-persist"
CACHE_FILE_NAME: Final = "token_cache.json"

Rule = Literal["explicit", "environment", "xdg-runtime-dir", "user-cache-dir"]


@dataclass(frozen=True)
class CacheLocation:
    """A cache path and why it was chosen.

    Attributes:
        path: The cache file (absolute, ``~`` expanded).
        rule: Which rule chose it: ``"explicit"``, ``"environment"``, ``"xdg-runtime-dir"``
            or ``"user-cache-dir"``.
        reasons: Why each higher rule did not apply, in order, e.g.
            ``"XDG_RUNTIME_DIR is not set"``.
        persistent: Whether the location survives a reboot and logout (``False`` only for
            the runtime directory).
    """

    path: Path
    rule: Rule
    reasons: tuple[str, ...] = ()
    persistent: bool = True

    def __fspath__(self) -> str:
        """Let the location stand wherever a path is accepted."""
        return os.fspath(self.path)


def default_cache_path(
    app_name: str = DEFAULT_APP_NAME,
    *,
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> CacheLocation:
    """Decide where the token cache lives, by the documented precedence.

    Args:
        app_name: Names the directory under the runtime or cache directory, so that
            unrelated applications do not share tokens unless they choose to.
        explicit: A path given by the caller; wins over everything.
        environ: The environment to consult (defaults to ``os.environ``).

    Raises:
        CacheLocationError: ``explicit`` or ``MSAL_PERSIST_CACHE`` is empty or names a
            directory, or ``app_name`` is not a plain directory name.
    """
    env = os.environ if environ is None else environ
    if explicit is not None:
        return CacheLocation(_checked_file_path(os.fspath(explicit)), "explicit")
    reasons = ["no explicit path was given"]
    from_env = env.get(ENV_VAR)
    if from_env:
        return CacheLocation(_checked_file_path(from_env), "environment", tuple(reasons))
    reasons.append(f"{ENV_VAR} is not set")
    if not app_name or app_name in {".", ".."} or "/" in app_name or os.sep in app_name:
        raise CacheLocationError(app_name, "the app name must be a plain directory name")
    runtime = env.get("XDG_RUNTIME_DIR", "")
    problem = _runtime_dir_problem(runtime)
    if problem is None:
        path = Path(runtime, app_name, CACHE_FILE_NAME)
        return CacheLocation(path, "xdg-runtime-dir", tuple(reasons), persistent=False)
    reasons.append(problem)
    cache_dir = platformdirs.user_cache_dir(app_name, appauthor=False)
    return CacheLocation(Path(cache_dir, CACHE_FILE_NAME), "user-cache-dir", tuple(reasons))


def _checked_file_path(raw: str) -> Path:
    if not raw.strip():
        raise CacheLocationError(raw, "the path is empty")
    path = Path(os.path.abspath(os.path.expanduser(raw)))
    if raw.endswith(("/", os.sep)) or path.is_dir():
        raise CacheLocationError(raw, "it names a directory, not a file")
    return path


def _runtime_dir_problem(runtime: str) -> str | None:
    """Return why ``runtime`` is unsafe as XDG_RUNTIME_DIR, or ``None`` if it is fine."""
    if not runtime:
        return "XDG_RUNTIME_DIR is not set"
    if sys.platform == "win32":
        return "XDG_RUNTIME_DIR is not used on Windows"
    if not os.path.isabs(runtime):
        return f"XDG_RUNTIME_DIR={runtime} is not an absolute path"
    try:
        st = os.lstat(runtime)
    except OSError as error:
        return f"XDG_RUNTIME_DIR={runtime} cannot be used: {error.strerror}"
    mode = stat.S_IMODE(st.st_mode)
    problems = (
        (stat.S_ISLNK(st.st_mode), "is a symlink"),
        (not stat.S_ISDIR(st.st_mode), "is not a directory"),
        (st.st_uid != os.geteuid(), f"is owned by uid {st.st_uid}, not {os.geteuid()}"),
        (mode != 0o700, f"has mode {mode:04o}, not 0700"),
    )
    for failed, what in problems:
        if failed:
            return f"XDG_RUNTIME_DIR={runtime} {what}"
    return None
