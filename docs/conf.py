"""Sphinx configuration of the documentation site (MyST Markdown, furo). Build: ``make docs``."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "dens_lightning"
author = "the dens_lightning authors"
extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
    "dens_reference",
]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "experiments/*.png"]
html_theme = "furo"
html_title = "dens_lightning"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False
suppress_warnings = [
    "myst.xref_missing",  # links into the repository (configs/, bench/) outside the site
    "myst.domains",  # sphinx-argparse's domain answers no generic cross-references
]
