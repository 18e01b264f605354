"""Azure CLI's own token cache code, unchanged, on the file msal-persist writes, and back.

Azure CLI keeps its msal cache in ``~/.azure/msal_token_cache.json`` (``$AZURE_CONFIG_DIR``)
through msal-extensions. ``azure-cli-core`` pins portalocker 2 and msal-persist needs 3,
so Azure CLI runs from a virtual environment of its own, built once per test session
(``azure-cli-core`` from PyPI, plus msal-persist's test kit without its dependencies), as a
user's ``az`` lives apart from their applications. See ``tests/workers/azure_cli.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from interop_helpers import Measure

from msal_persist import PersistedTokenCache
from msal_persist.testing import (
    AZURE_CLI_CLIENT_ID,
    AZURE_POWERSHELL_CLIENT_ID,
    DEFAULT_SCOPES,
    LocalAuthority,
)
from process_helpers import WORKER_TIMEOUT, worker, worker_env

ROOT = Path(__file__).resolve().parents[1]
SCOPE = "User.Read"
AZURE_CLI = "azure-cli-core>=2.60"


@pytest.fixture(scope="session")
def azure_cli_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The Python of a virtual environment with azure-cli-core (built once per session)."""
    venv = tmp_path_factory.mktemp("azure-cli") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    uv = shutil.which("uv")
    python = str(venv / "bin" / "python")
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", base, str(venv)], check=True, timeout=300)
        install = [uv, "pip", "install", "-q", "--python", python]
    else:
        subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=300)
        install = [python, "-m", "pip", "install", "-q"]
    subprocess.run([*install, AZURE_CLI, "platformdirs"], check=True, timeout=600)
    subprocess.run([*install, "--no-deps", "-e", str(ROOT)], check=True, timeout=300)
    return python


@pytest.fixture
def azure_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Azure CLI's configuration directory, of this test's own."""
    directory = tmp_path / "azure"
    directory.mkdir(mode=0o700)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(directory))
    return directory


def _azure_cli(python: str, *args: str) -> dict[str, Any]:
    command = [python, *worker("azure_cli", *args)[1:]]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=worker_env(),
        timeout=WORKER_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_azure_cli_version(azure_cli_python: str, measure: Measure) -> None:
    out = subprocess.run(
        [
            azure_cli_python,
            "-c",
            "import importlib.metadata as m; print(m.version('azure-cli-core'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    measure("azure-cli-core", out)
    assert tuple(int(part) for part in out.split(".")[:2]) >= (2, 60)


def test_azure_cli_returns_the_token_msal_persist_stored(
    azure_cli_python: str, azure_config_dir: Path
) -> None:
    authority = LocalAuthority(username="ada@example.test")
    cache = PersistedTokenCache(azure_config_dir / "msal_token_cache.json")
    app = authority.public_client(cache, client_id=AZURE_CLI_CLIENT_ID)
    stored = authority.sign_in(app, "ada@example.test")
    report = _azure_cli(azure_cli_python, "get_token", "ada@example.test", SCOPE)
    assert report == {"token": stored["access_token"], "source": "cache", "hits": 0}


def test_msal_persist_uses_the_sign_in_azure_cli_wrote(
    azure_cli_python: str, azure_config_dir: Path
) -> None:
    assert _azure_cli(azure_cli_python, "login", "ada@example.test", SCOPE) == {
        "username": "ada@example.test",
        "hits": 1,
    }
    path = azure_config_dir / "msal_token_cache.json"
    authority = LocalAuthority()
    # Azure CLI's own client id: its access token, from the cache.
    cli = authority.public_client(PersistedTokenCache(path), client_id=AZURE_CLI_CLIENT_ID)
    (account,) = cli.get_accounts(username="ada@example.test")
    result = cli.acquire_token_silent([SCOPE], account)
    assert result is not None
    assert result["token_source"] == "cache"
    assert authority.token_endpoint_hits == 0
    # Another family app: Azure CLI's family refresh token, redeemed once.
    powershell = authority.public_client(
        PersistedTokenCache(path), client_id=AZURE_POWERSHELL_CLIENT_ID
    )
    result = powershell.acquire_token_silent(DEFAULT_SCOPES, account)
    assert result is not None
    assert authority.hits_by_grant == {"refresh_token": 1}
    # And Azure CLI still reads the file after msal-persist wrote it.
    report = _azure_cli(azure_cli_python, "get_token", "ada@example.test", SCOPE)
    assert report["source"] == "cache"
    assert os.stat(path).st_mode & 0o777 == 0o600
