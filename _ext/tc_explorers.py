"""Sphinx extension: the static site's explorers (transformer_challenges.explorers).

A page whose rendered body contains an explorer (``class="tc-explorer"``, written by the
library's ``Explorer._repr_html_`` into a stored cell output) gets two scripts, once per page:
Plotly's own bundle, copied at build time from the pinned ``plotly`` package (requirements.txt),
and ``_ext/explorers/tc-explorers.js``, the glue that builds the form and evaluates the
generated expressions; plus ``tc-explorers.css``. Pages without an explorer load neither.
Nothing comes from a CDN: the site keeps working from a local folder with the network off.
Every page also gets ``tc-layout.css``: on large screens, a reading column where a 100-character
code line fits without scrolling sideways (tests/test_site.py measures it at 1280 px).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

HERE = Path(__file__).resolve().parent / "explorers"
PLOTLY = "plotly.min.js"


def plotly_bundle() -> Path:
    """Path of the installed Plotly.js bundle (the Python package ships it)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError("plotly is not installed: pip install -r requirements.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / PLOTLY
    if not path.exists():
        raise ExtensionError(f"{path} not found; reinstall plotly.")
    return path


def _stage(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    staging = Path(app.outdir).parent / ".explorers-static"
    target = staging / "explorers"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plotly_bundle(), target / PLOTLY)
    for name in ("tc-explorers.js", "tc-explorers.css", "tc-layout.css"):
        shutil.copy2(HERE / name, target / name)
    app.config.html_static_path.append(str(staging))


def _add_to_pages_with_explorers(app: Sphinx, pagename, templatename, context, doctree) -> None:
    if 'class="tc-explorer"' not in context.get("body", ""):
        return
    app.add_css_file("explorers/tc-explorers.css")
    app.add_js_file(f"explorers/{PLOTLY}", priority=600)
    app.add_js_file("explorers/tc-explorers.js", priority=610, defer="defer")


def setup(app: Sphinx):
    app.add_css_file("explorers/tc-layout.css")  # every page: the wider reading column
    app.connect("builder-inited", _stage)
    app.connect("html-page-context", _add_to_pages_with_explorers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
