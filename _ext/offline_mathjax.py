"""Sphinx extension: serve MathJax 3 from the built site, so math renders with no network
(and include every script once, see ``_dedupe_scripts``).

MathJax comes from the PyPI package ``django-static-mathjax`` (pinned in requirements.txt),
a plain copy of MathJax's ``es5`` distribution. At build time the needed files are staged in
``_build/.mathjax-static/mathjax`` and added to ``html_static_path``; ``mathjax_path`` then
points at ``_static/mathjax/tex-mml-chtml.js``.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

ENTRY = "tex-mml-chtml.js"
# Other combined bundles are alternatives to ENTRY; the site never loads them.
SKIP = shutil.ignore_patterns("tex-svg*.js", "tex-mml-svg.js", "mml-*.js", "tex-chtml*.js", "*.map")


def mathjax_es5() -> Path:
    """Directory of the installed MathJax ``es5`` files."""
    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError("MathJax is not installed: pip install -r requirements.txt "
                             "(package django-static-mathjax).")
    es5 = Path(list(spec.submodule_search_locations)[0]) / "static" / "mathjax" / "es5"
    if not (es5 / ENTRY).exists():
        raise ExtensionError(f"{es5 / ENTRY} not found; reinstall django-static-mathjax.")
    return es5


def _stage(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    staging = Path(app.outdir).parent / ".mathjax-static"
    target = staging / "mathjax"
    if not (target / ENTRY).exists():
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(mathjax_es5(), target, ignore=SKIP)
    app.config.html_static_path.append(str(staging))


def _dedupe_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Include each script once. sphinx-thebe 0.3 registers its inline configuration script
    (``const THEBE_JS_URL = ...``) twice, with two priorities, which the browser reports as a
    SyntaxError; sphinx-togglebutton does the same with its selector."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        filename = str(getattr(script, "filename", script) or "")  # None and "" both mean inline
        key = (filename, tuple(sorted(attributes.items())))       # priority deliberately ignored
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: handlers after this one add to the same list


def setup(app: Sphinx) -> dict:
    app.config.mathjax_path = f"mathjax/{ENTRY}"
    app.connect("builder-inited", _stage)
    # Late, after the other extensions have added their scripts for this page.
    app.connect("html-page-context", _dedupe_scripts, priority=999)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
