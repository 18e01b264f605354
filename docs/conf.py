"""Sphinx configuration of the msal-persist documentation (``nox -s docs`` builds it)."""

from __future__ import annotations

import importlib.metadata

project = "msal-persist"
author = "msal-persist developers"
copyright = "msal-persist developers"  # noqa: A001 - Sphinx's name
release = importlib.metadata.version("msal-persist")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Every reference must resolve: a broken one fails the build (-W). Names outside this
# project have no inventory here (the build is offline), so they are allowed by pattern.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(msal|os|typing|collections|pathlib|enum|argparse|types|threading|redis)\..*"),
    (r"py:class", r"(Any|Path|Final|Hashable|Iterable|Iterator|Mapping|Sequence|Self)"),
    (r"py:class", r"_.*"),
    (r"py:.*", r"msal_persist\._.*"),  # private modules, named in docstrings for maintainers
    # Named by the codec protocol's docstrings; private until codecs live outside the tree.
    (r"py:.*", r"(NotACacheError|Decoded|decode_document|encode_document)"),
    (r"py:class", r"(bytes|str|int|float|bool|dict|list|tuple|object|None|type)"),
    (r"py:exc", r"(OSError|TimeoutError|ValueError|RuntimeError|TypeError|ImportError)"),
    (r"py:class", r"(OSError|TimeoutError|ValueError|RuntimeError|TypeError|Exception)"),
]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "furo"
html_title = f"msal-persist {release}"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
doctest_global_setup = """
import os, tempfile
from pathlib import Path
"""
