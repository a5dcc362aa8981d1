"""Book-level checks: pairing, stored outputs, table of contents, bootstrap cell, build, launch links."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import jupytext
import nbformat
import pytest
import yaml

import transformer_challenges as tc
from bookcheck import (BOOTSTRAP, ROOT, cell_should_have_output, cells_signature, chapter_notebooks,
                       missing_outputs, read, toc_files)

NOTEBOOKS = chapter_notebooks()
IDS = [str(p.relative_to(ROOT / "chapters")) for p in NOTEBOOKS]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks under chapters/"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_notebook_is_paired_and_in_sync(nb_path: Path):
    md = nb_path.with_suffix(".md")
    assert md.exists(), f"{nb_path} has no paired {md.name}; run scripts/execute.py on the .md"
    nb = read(nb_path)
    assert "md:myst" in nb.metadata.get("jupytext", {}).get("formats", ""), "pairing metadata missing"
    assert cells_signature(jupytext.read(md)) == cells_signature(nb), (
        f"{md.name} and {nb_path.name} differ: edit the .md, then run scripts/execute.py on it")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_every_output_producing_cell_has_a_stored_output(nb_path: Path):
    nb = read(nb_path)
    missing = missing_outputs(nb)
    assert not missing, f"code cells {missing} print/plot but have no stored output: re-execute the notebook"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_first_code_cell_bootstraps_the_pinned_package(nb_path: Path):
    first = next(c for c in read(nb_path).cells if c.cell_type == "code")
    match = BOOTSTRAP.search(first.source)
    assert match, "the first code cell must be the Colab bootstrap (see Chapter 1)"
    assert match["url"] == CONFIG["repository"]["url"], "bootstrap installs from another repository"
    assert match["version"] == tc.__version__, "bootstrap is not pinned to the book's version"
    assert "import transformer_challenges as tc" in first.source and "print" not in first.source


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_no_widget_state_is_stored(nb_path: Path):
    """Stored widget state makes the static page fetch the widget manager from a CDN."""
    nb = read(nb_path)
    assert "widgets" not in nb.metadata, "widget state stored: re-execute with scripts/execute.py"
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            assert "application/vnd.jupyter.widget-view+json" not in output.get("data", {})


def test_output_check_fails_on_a_notebook_saved_without_outputs():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("print(x)"),
        nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"),
        nbformat.v4.new_code_cell("x + 1"),
        nbformat.v4.new_code_cell("for i in range(2):\n    print(i)"),
        nbformat.v4.new_code_cell("def f():\n    print('not run here')"),
    ])
    assert missing_outputs(nb) == [1, 2, 3, 4]
    assert not cell_should_have_output("%pip install x\nimport os")
    assert not cell_should_have_output("hook.remove()")


def test_toc_and_chapters_match():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = toc_files(toc)
    for entry in files:
        candidates = [ROOT / f"{entry}{ext}" for ext in (".ipynb", ".md")]
        assert any(c.exists() for c in candidates), f"_toc.yml lists {entry}, which does not exist"
    listed = {str((ROOT / f).with_suffix(".ipynb")) for f in files}
    unlisted = [str(p.relative_to(ROOT)) for p in NOTEBOOKS if str(p) not in listed]
    assert not unlisted, f"notebooks missing from _toc.yml: {unlisted}"
    assert len(files) == len(set(files)), "a page is listed twice in _toc.yml"


def test_book_builds_with_zero_warnings(built_site: Path):
    assert (built_site / "index.html").exists()
    bib = (built_site / "bibliography.html").read_text(encoding="utf-8")
    assert "attention is all you need" in bib.lower(), "citations did not resolve into the bibliography"
    assert bib.count('class="citation"') >= 50, "most cited works are missing from the bibliography"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_chapter_page_links_colab_and_binder_to_its_notebook(built_site: Path, nb_path: Path):
    rel = nb_path.relative_to(ROOT).as_posix()
    page = (built_site / rel).with_suffix(".html")
    assert page.exists(), f"{page} was not built"
    html = page.read_text(encoding="utf-8")
    repo = CONFIG["repository"]["url"].removeprefix("https://github.com/")
    colab = re.findall(r'href="(https://colab\.research\.google\.com/github/[^"]+)"', html)
    binder = re.findall(r'href="(https://mybinder\.org/v2/gh/[^"]+)"', html)
    assert colab and binder, "launch buttons missing"
    for link in colab:
        assert link.endswith(f"{repo}/blob/{CONFIG['repository']['branch']}/{rel}"), link
    for link in binder:
        target = unquote(link.split("urlpath=tree/")[-1])
        assert target == rel and (ROOT / target).exists(), link
    assert "_sources/" in html or ".ipynb" in html  # download button offers the source
