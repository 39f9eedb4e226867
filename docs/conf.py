"""Sphinx configuration of the sklearn-ml3 documentation site (``make docs``).

The user guide is the Markdown pages of this folder (MyST); the API
reference is generated from the ``__all__`` of the public modules below, one
page per public name, so that a new public name or a new page needs no
change here.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import sklearn_ml3

project = "sklearn-ml3"
author = "the sklearn-ml3 developers"
release = version = sklearn_ml3.__version__
copyright = "the sklearn-ml3 developers"  # noqa: A001  (Sphinx's name)

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_templates"]
templates_path = ["_templates"]

myst_heading_anchors = 3  # links like page.md#a-section
myst_enable_extensions = ["dollarmath"]

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
autodoc_default_options = {"members": True}
# gymnasium's and SB3's docstrings of overridden methods are not numpydoc
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = "sklearn-ml3"
html_theme_options = {"navigation_with_keys": False, "show_toc_level": 2}
html_static_path: list[str] = []

#: Modules whose ``__all__`` make the API reference, in the order shown. A name
#: re-exported by a later module is documented once, under the first.
API_MODULES = [
    ("sklearn_ml3", "Learned losses and estimators"),
    ("sklearn_ml3.meta", "The meta-training engine"),
    ("sklearn_ml3.meta.distributed", "Meta-batches over torch.distributed ranks"),
    ("sklearn_ml3.zoo", "The loss zoo: pre-trained learned losses with measured cards"),
    ("rl", "Reinforcement learning"),
    ("rl.meta", "Meta-training policy losses"),
    ("rl.envs", "Goal-conditioned environments"),
]


def _write_api_index(app, config) -> None:
    """Write api/index.rst: one autosummary table (and page per name) per module."""
    seen: set[int] = set()
    lines = ["API reference", "=============", ""]
    for module_name, title in API_MODULES:
        module = importlib.import_module(module_name)
        names = []
        for name in module.__all__:
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in seen:
                continue  # constants have no page; re-exports are documented once
            seen.add(id(obj))
            names.append(name)
        if not names:
            continue
        header = f"``{module_name}``: {title}"
        lines += [header, "-" * len(header), "", f".. automodule:: {module_name}",
                  "   :no-members:", "", f".. currentmodule:: {module_name}",
                  "", ".. autosummary::", "   :toctree: generated", "   :nosignatures:", ""]
        lines += [f"   {name}" for name in names] + [""]
    path = Path(app.srcdir) / "api" / "index.rst"
    path.parent.mkdir(exist_ok=True)
    text = "\n".join(lines)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _skip_generated_members(app, what, name, obj, skip, options):
    # scikit-learn adds set_{fit,score,...}_request to every estimator class; their
    # docstrings refer to scikit-learn's own glossary
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated_members)
    # before Sphinx looks for source files, so that the page and its stubs are built
    app.connect("config-inited", _write_api_index)
