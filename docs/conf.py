"""Sphinx configuration of fasttun's documentation (MyST Markdown; API reference from the docstrings).

Build it with the package importable (installed, or ``PYTHONPATH=src`` after an in-place build):
``python -m sphinx -W -b html docs build/docs``."""

from __future__ import annotations

try:
    import fasttun
except ImportError as exc:  # the API reference is generated from the installed package's docstrings
    raise SystemExit(f"docs/conf.py: fasttun is not importable ({exc}): pip install . first, or build it in place "
                     "(python setup.py build_ext --inplace) and set PYTHONPATH=src") from None

project = "fasttun"
author = "fasttun developers"
copyright = "fasttun developers"
release = fasttun.__version__
version = ".".join(release.split(".")[:2])

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Snippets carry a word after the language that says how the tests run them (```python root, ```python fragment):
# highlighting takes the first word only.
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autoclass_content = "both"                # the class docstring and __init__'s
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"fasttun {release}"
