"""Helpers shared by the CLI tests: run the tool in-process, read doctor's report."""

from __future__ import annotations

import re

import pytest

from msal_persist._cli import main

DOCTOR_LINE = re.compile(r"^(OK  |WARN|FAIL)  [a-z ]+: \S")
FIX_LINE = re.compile(r"^      fix: \S")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the tool in this process; return the exit status, stdout and stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def doctor_checks(out: str) -> dict[str, str]:
    """Parse doctor's output, checking each line's shape: {check: "STATUS detail"}.

    Lines are split on newlines only, so a raw control character inside a line fails the
    shape check instead of starting a line of its own. A fix line is appended to its
    check's text after a newline.
    """
    lines = out.split("\n")
    assert lines[-1] == ""
    assert lines[-2].startswith("doctor: ")
    checks: dict[str, str] = {}
    last = ""
    for line in lines[:-2]:
        if FIX_LINE.match(line):
            checks[last] += "\n" + line.strip()
            continue
        assert DOCTOR_LINE.match(line), line
        status, _, rest = line.partition("  ")
        last, _, detail = rest.strip().partition(": ")
        checks[last] = f"{status} {detail}"
    return checks
