"""The documentation covers the whole public API, every error and every exit status.

The site itself is built, with its examples run, by ``nox -s docs`` (warnings are errors);
these checks need no Sphinx and run with the rest of the suite.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import msal_persist
import msal_persist.testing
from msal_persist import _cli, _errors

DOCS = Path(__file__).resolve().parents[1] / "docs"
PUBLIC = [
    *((f"msal_persist.{name}", getattr(msal_persist, name)) for name in msal_persist.__all__),
    *(
        (f"msal_persist.testing.{name}", getattr(msal_persist.testing, name))
        for name in msal_persist.testing.__all__
    ),
]


@pytest.mark.parametrize(("name", "value"), PUBLIC, ids=[name for name, _ in PUBLIC])
def test_every_public_name_is_in_the_reference_with_a_docstring(name: str, value: object) -> None:
    if name == "msal_persist.__version__":
        assert "`__version__`" in (DOCS / "reference" / "api.md").read_text()
        return
    reference = (DOCS / "reference" / "api.md").read_text()
    assert re.search(rf"\b{re.escape(name)}$", reference, re.MULTILINE), name
    if inspect.isclass(value) or inspect.isfunction(value):
        assert inspect.getdoc(value), f"{name} has no docstring"


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
