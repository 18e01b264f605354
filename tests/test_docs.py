"""The documentation covers the whole public API, every error and every exit status.

The site itself is built, with its examples run, by ``nox -s docs`` (warnings are errors);
these checks need no Sphinx and run with the rest of the suite.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import msal_persist
import msal_persist.testing
from msal_persist import _cli, _errors

DOCS = Path(__file__).resolve().parents[1] / "docs"
PUBLIC = [
    *(("msal_persist", name) for name in msal_persist.__all__),
    *(("msal_persist.testing", name) for name in msal_persist.testing.__all__),
]
SOURCE = Path(msal_persist.__file__).parent


def _docstring(module: str, name: str) -> str | None:
    if module == "msal_persist" and name in msal_persist._NEEDS_REDIS:
        # Read from the source: importing them needs the redis extra, absent here.
        tree = ast.parse((SOURCE / "_redis_store.py").read_text())
        (node,) = (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
        return ast.get_docstring(node)
    value = getattr(importlib.import_module(module), name)
    return inspect.getdoc(value) if inspect.isclass(value) or inspect.isfunction(value) else ""


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_every_public_name_is_in_the_reference_with_a_docstring(module: str, name: str) -> None:
    reference = (DOCS / "reference" / "api.md").read_text()
    if name == "__version__":
        assert "`__version__`" in reference
        return
    assert re.search(rf"\b{re.escape(f'{module}.{name}')}$", reference, re.MULTILINE), name
    assert _docstring(module, name) is not None, f"{module}.{name} has no docstring"


def test_troubleshooting_explains_every_error_and_exit_status() -> None:
    text = (DOCS / "guides" / "troubleshooting.md").read_text()
    errors = [
        name
        for name, value in vars(_errors).items()
        if inspect.isclass(value) and issubclass(value, _errors.MsalPersistError)
    ]
    assert len(errors) >= 6
    for name in errors:
        assert f"msal_persist.{name}`" in text, name
    statuses = {int(m) for m in re.findall(r"^\| (\d+) \|", text, re.MULTILINE)}
    assert statuses == {int(code) for code in _cli.ExitCode}
    for code in _cli.ExitCode:
        assert f"| {code.value} | {code.summary} |" in text, code
