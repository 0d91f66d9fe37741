"""Sphinx configuration of the lightning-synflow documentation (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(
    0, str(DOCS.parent)
)  # document the checkout next to this file, not another install
sys.path.insert(0, str(DOCS / "_ext"))

import lightning_synflow  # noqa: E402

project = "lightning-synflow"
author = "lightning-synflow contributors"
copyright = "lightning-synflow contributors"
version = release = lightning_synflow.__version__  # the one source of the version

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "docstring_check",
    "reference_tidy",
]
docstring_check_packages = [
    "lightning_synflow"
]  # references to re-exported names resolve (docs/_ext)
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# RESULTS.md is part of paper.md (included there), not a page of its own.
exclude_patterns = ["_build", "_ext", "RESULTS.md"]

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# Every public member is listed, documented or not, so that docstring_check sees the undocumented ones.
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
# A long signature shows one argument per line instead of a wall of text.
maximum_signature_line_length = 88
# Optional extras only: everything else must import for real.
autodoc_mock_imports = ["wandb", "torchvision", "transformers"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Attributes sections as field lists: dataclass fields are listed by autodoc already (no duplicates).
napoleon_use_ivar = True

# No intersphinx (CI is offline): references into torch, Lightning, numpy and the standard library cannot
# resolve and are ignored; a broken reference to this package's own objects is a warning, and -W fails it.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|lightning|lightning_fabric|numpy|np|nn|jsonargparse|safetensors|typing_extensions)(\..*)?",
    ),
    (
        r"py:.*",
        r"(typing|collections|collections\.abc|os|pathlib|fractions|dataclasses|argparse|enum)\..*",
    ),
    (
        r"py:.*",
        r"(Tensor|Module|Parameter|LightningModule|LightningDataModule|Trainer|Callback|Fraction|Path)",
    ),
    (
        r"py:.*",
        r"(Any|Optional|Union|Callable|Iterable|Iterator|Sequence|Mapping|MutableMapping|Literal|NoReturn)",
    ),
    (
        r"py:.*",
        r"(int|float|str|bool|bytes|dict|list|tuple|set|type|object|None|NoneType|Exception|ValueError)",
    ),
    (
        r"py:.*",
        r"(TypeError|FloatingPointError|RuntimeError|KeyError|AttributeError|SystemExit)",
    ),
    (r"py:.*", r"MisconfigurationException"),  # Lightning's
    # Private names are never documented (a private base class shown by show-inheritance, say).
    (r"py:.*", r"(.*\.)?_[A-Za-z]\w*"),
    # Nor are the internal modules behind the documented ones (INTERNAL_MODULES in tests/integration/test_docs.py):
    # their classes in the signatures of documented internals stay plain text.
    (
        r"py:.*",
        r"lightning_synflow\.pruning\.(alive|checks|cut|scores|select|sharded|workspace)\..*",
    ),
    (r"py:.*", r"lightning_synflow\.callback\.(distributed|sharded|thin|upkeep)\..*"),
]

html_theme = "furo"
html_title = f"lightning-synflow {release}"
html_static_path: list[str] = []
