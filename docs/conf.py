"""Sphinx configuration: `make docs` builds docs/ into build/docs (warnings are errors)."""
import os
import sys

sys.path.insert(0, os.path.abspath("../python"))  # noqa: the source tree's package (the extension must be built)

project = "Parla in C"
author = "The Parla in C authors"
copyright = "2026, The Parla in C authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]  # links into the source tree (../include/parla.h) are not pages
html_theme = "alabaster"
