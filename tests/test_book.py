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
from bookcheck import (BOOTSTRAP, ROOT, bootstrap_source, cell_should_have_output, cells_signature, chapter_notebooks,
                       missing_outputs, prose_numbers, read, toc_files, unglued_numbers)
from nbval_tolerance import TAG as TOLERANCE_TAG
from nbval_tolerance import Tolerance

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
def test_first_code_cell_is_the_generated_bootstrap(nb_path: Path):
    """Every chapter (.ipynb and .md) starts with the cell generated from _config.yml and the
    package version; TC_INSTALL_SPEC overrides its requirement (tests/test_launch.py runs it)."""
    for path in (nb_path, nb_path.with_suffix(".md")):
        first = next(c for c in jupytext.read(path).cells if c.cell_type == "code")
        assert first.source == bootstrap_source(), (
            f"{path.name}: the bootstrap cell differs from the generated one; "
            "run `python scripts/sync_bootstrap.py`")


def test_bootstrap_installs_the_configured_repository_at_the_package_version():
    match = BOOTSTRAP.search(bootstrap_source())
    assert match["url"] == CONFIG["repository"]["url"]
    assert match["version"] == tc.__version__
    assert "TC_INSTALL_SPEC" in bootstrap_source() and "print" not in bootstrap_source()


def test_the_repository_url_is_written_in_one_place():
    """Any other spelling of the repository's address (README, prose, config) is the config's."""
    url = CONFIG["repository"]["url"]
    name = url.rstrip("/").rsplit("/", 1)[-1]
    pattern = re.compile(r"https?://github\.com/[\w.-]+/" + re.escape(name) + r"\b")
    tracked = [ROOT / "README.md", ROOT / "intro.md", ROOT / "pyproject.toml", ROOT / "binder/requirements.txt",
               *ROOT.glob("chapters/**/*.md")]
    wrong = {f"{p.relative_to(ROOT)}: {m[0]}" for p in tracked if p.exists()
             for m in pattern.finditer(p.read_text()) if m[0] != url}
    assert not wrong, f"repository address differs from _config.yml's {url}: {sorted(wrong)}"


def test_version_has_one_source():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "transformer_challenges.__version__" in pyproject


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


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_experimental_cells_state_a_valid_tolerance(nb_path: Path):
    """The tier of a compared output is visible in its source: tag and tolerance come together."""
    for n, cell in enumerate(c for c in read(nb_path).cells if c.cell_type == "code"):
        tagged = TOLERANCE_TAG in cell.metadata.get("tags", [])
        assert tagged == ("tolerance" in cell.metadata), (
            f"code cell {n}: the tag {TOLERANCE_TAG!r} and the metadata 'tolerance' go together")
        if tagged:
            Tolerance.from_metadata(cell.metadata)  # raises with the fix when unusable


# A float residue (a difference that is rounding noise) printed as digits differs between CPUs;
# an exact-tier cell prints a bound ("< 1e-12") or a True/False check instead.
# (A bound or a stated tolerance, "< 1e-12", "below 1e-12", "atol 1e-10", is not a residue.)
RESIDUE = re.compile(r"(?<![<≤] )(?<!below )(?<!tol )(?<!tol=)(?<![<≤\w.])"
                     r"[-+]?\d+(?:\.\d+)?e-(?:1\d|[2-9]\d|\d{3})\b")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_exact_cells_print_no_float_residues(nb_path: Path):
    found = []
    for n, cell in enumerate(c for c in read(nb_path).cells if c.cell_type == "code"):
        tags = cell.metadata.get("tags", [])
        if {"nbval-ignore-output", "nbval-skip", TOLERANCE_TAG} & set(tags):
            continue
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [v for k, v in output.get("data", {}).items()
                                                 if k.startswith("text/") and isinstance(v, str)]
            found += [f"cell {n}: {m.group()}" for t in texts for m in RESIDUE.finditer(t)]
    assert not found, f"float residues printed as digits in exact cells (print a bound instead): {found}"


def test_residue_pattern():
    assert RESIDUE.findall("max |a - b| = 4.4e-16, rel 1.4e-17") == ["4.4e-16", "1.4e-17"]
    assert not RESIDUE.findall("max |a - b| < 1e-12 and lr=3e-4, eps ≤ 1e-10, 1.2e-3, <1e-15, "
                               "below 1e-12, (atol 1e-10), rtol=1e-12")


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_numbers_a_cell_prints_are_glued_into_the_prose(nb_path: Path):
    hits = unglued_numbers(read(nb_path))
    assert not hits, (f"typed in the prose but printed by a cell of this page: {hits}; paste them with "
                      "glue('name', value, display=False) and {glue:text}`name:.3f`")


def test_the_glue_heuristic_finds_typed_numbers_and_spares_glued_cited_and_math_ones():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("Loss falls to 0.611 after 400 steps; the cache holds 164,282,499,072 B.\n\n"
                                      "Glued: {glue:text}`loss:.3f`. Math: $0.611$. Code: `0.611`.\n\n"
                                      "The paper reports 0.611 too {cite}`kaplan2020scaling`.\n\n"
                                      "| row | 0.611 |\n| cited | 0.611 {cite}`x` |\n\n"
                                      "Small numbers stay: 400, 2.5, 0.61, 12.5%."),
        nbformat.v4.new_code_cell("print(...)", outputs=[nbformat.v4.new_output(
            "stream", name="stdout", text="val loss 0.611 at step 400; KV 164282499072 B, 164,282,499,072 B, 0.6110\n")]),
    ])
    assert unglued_numbers(nb) == ["0.611", "164,282,499,072"]
    assert prose_numbers("at 1.02x the FLOPs, 10.3 GB") == {"1.02", "10.3"}
    assert prose_numbers("ratios 0.02 and 2.5 and 2048") == set()


AUDIT_STATUSES = ("reproduced", "corrected", "contested", "cited", "not testable here", "structural")


def audit_rows() -> list[list[str]]:
    """The rows of the audit appendix's table, as lists of cells."""
    text = (ROOT / "chapters" / "11-appendix" / "audit.md").read_text()
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.splitlines() if re.match(r"\|\s*\d+\s*\|", line)]
    return rows


def test_audit_rows_are_numbered_in_order_and_use_only_the_declared_statuses():
    text = (ROOT / "chapters" / "11-appendix" / "audit.md").read_text()
    for status in AUDIT_STATUSES:  # the page declares each status it uses
        assert f"**{status}**" in text, f"audit.md does not declare the status {status!r}"
    rows = audit_rows()
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    bad = [r[0] for r in rows if not r[3].startswith(AUDIT_STATUSES)]
    assert not bad, f"audit rows whose status is not one of {AUDIT_STATUSES}: {bad}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=IDS)
def test_glued_numbers_are_plain_python_numbers(nb_path: Path):
    """glue() of a numpy scalar stores 'np.float64(0.97)', which {glue:text}`x:.2f` cannot format."""
    bad = []
    for cell in read(nb_path).cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            text = out.get("data", {}).get("text/plain", "")
            if name and re.match(r"np\.\w+\(", text if isinstance(text, str) else "".join(text)):
                bad.append(name)
    assert not bad, f"glued as numpy scalars (wrap the value in float() or int()): {bad}"
