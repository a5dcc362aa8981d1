"""Honest dependency ranges: every module the book imports is declared, and the bounds are tested.

Fast: the modules that code/ and the chapters import (tests/imports.py) each come from a
distribution in pyproject's ``dependencies``; the checker itself is tested on imports it must
reject. Slow (``make test-slow``): a fresh venv with every dependency at its declared minimum,
beside torch 2.13.0 (the CPU wheel the machine has; torch's own bound is an API bound, see
pyproject.toml), runs the library's unit tests and one chapter.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jupytext
import pytest
from packaging.specifiers import Specifier

from imports import (ROOT, book_imports, chapter_imports, declared_requirements, normalize,
                     pinned_versions, third_party, top_level_imports, undeclared)
from nbenv import nb_env
from venvs import (clean_env, execute_notebook, failed_imports, make_venv, pip_install,
                   register_kernel, run, venv_dir)  # noqa: F401 (a fixture)

# The chapter run at the lower bounds: cheap (about 5 s), and it uses ipywidgets.interact,
# myst_nb.glue, sympy and matplotlib, which the unit tests do not touch.
LOWER_BOUND_CHAPTER = ROOT / "chapters/02-compute/compute-and-memory.ipynb"
# torch is installed at this version whatever its bound says (see pyproject.toml's comment).
TEST_TORCH = "2.13.0"


def declared_names() -> list[str]:
    return [r.name for r in declared_requirements()]


def test_every_module_the_book_imports_is_declared():
    imports = book_imports()
    problems = undeclared(imports, declared_names())
    assert not problems, "modules imported by code/ or chapters/ but not declared in pyproject:\n" + \
        "\n".join(f"  {m} ({p}); imported in {', '.join(sorted(imports[m])[:3])}"
                  for m, p in problems.items())


def test_the_checker_finds_imports_in_code_cells():
    cell = ("%pip install -q something\n"
            "!echo shell\n"
            "import os, numpy as np\n"
            "import matplotlib.pyplot as plt\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from . import sibling\n"
            "from transformer_challenges import costs\n"
            "def f():\n"
            "    import scipy.optimize\n")
    assert top_level_imports(cell) == {"os", "numpy", "matplotlib", "sklearn", "scipy",
                                       "transformer_challenges"}
    assert third_party(top_level_imports(cell)) == {"numpy", "matplotlib", "sklearn", "scipy"}


def test_the_checker_catches_an_undeclared_import():
    providers = {"numpy": ["numpy"], "sklearn": ["scikit-learn"], "yaml": ["PyYAML"]}
    assert undeclared({"numpy", "sklearn"}, ["numpy"], providers) == {
        "sklearn": undeclared({"sklearn"}, [], providers)["sklearn"]}
    assert "scikit-learn" in undeclared({"sklearn"}, ["numpy"], providers)["sklearn"]
    # names compare in PEP 503 form; a module nothing installed provides is reported
    assert undeclared({"sklearn", "yaml"}, ["Scikit_Learn", "pyyaml"], providers) == {}
    assert "no installed distribution" in undeclared({"not_a_module"}, [], providers)["not_a_module"]
    # the real environment's mapping: sklearn is installed here and comes from scikit-learn
    assert set(undeclared({"sklearn", "numpy"}, ["numpy"])) == {"sklearn"}


def test_the_only_exemption_is_the_kernel():
    """IPython is not declared: every chapter runs in an IPython kernel. Nothing else is exempt,
    and the library itself must not rely on the exemption."""
    library = {m for m, places in book_imports().items()
               if any(p.startswith("code") for p in places)}
    assert "IPython" not in library
    assert undeclared({"IPython"}, [], exempt=()) and not undeclared({"IPython"}, [])


def test_every_dependency_has_only_a_lower_bound():
    """Lower bounds only (Colab keeps its own versions), each a single ``>=`` that the slow test
    below can install exactly."""
    for req in declared_requirements():
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == ">=" and not req.marker, (
            f"{req}: declare a single lower bound 'name>=version' (tested by "
            "test_unit_tests_pass_at_the_lower_bounds)")


def library_test_files() -> list[Path]:
    """tests/test_*.py that import nothing but pytest, the standard library, the package and its
    declared dependencies: the unit tests (book build, browser, nbval and launch tests import
    more: jupytext, nbval, the test helpers)."""
    names = declared_names() + ["pytest"]
    chosen = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        modules = third_party(top_level_imports(path.read_text()))
        if not undeclared(modules, names, exempt=()):
            chosen.append(path)
    return chosen


def test_the_lower_bound_run_takes_the_unit_tests_only():
    names = {p.name for p in library_test_files()}
    assert {"test_model.py", "test_costs.py", "test_scaling.py", "test_vision.py"} <= names
    assert not names & {"test_book.py", "test_site.py", "test_smoke.py", "test_deps.py",
                        "test_launch.py", "test_nbval_tolerance.py"}


def test_the_lower_bound_chapter_uses_what_the_unit_tests_do_not():
    """The chapter run at the lower bounds exercises the chapter-only dependencies."""
    cells = jupytext.read(LOWER_BOUND_CHAPTER.with_suffix(".md")).cells
    modules = set().union(*(top_level_imports(c.source) for c in cells if c.cell_type == "code"))
    assert {"ipywidgets", "myst_nb", "sympy", "matplotlib"} <= modules, sorted(modules)


@pytest.mark.slow
def test_unit_tests_pass_at_the_lower_bounds(tmp_path, venv_dir, monkeypatch):
    """Every declared dependency at exactly its minimum (torch at 2.13.0), the package installed
    with --no-deps: the unit tests pass, every chapter import works and one chapter runs."""
    start = time.perf_counter()
    reqs = declared_requirements()
    minimum = {normalize(r.name): next(iter(r.specifier)).version for r in reqs}
    minimum["torch"] = TEST_TORCH
    pins = pinned_versions()
    python = make_venv(venv_dir)
    install_s = pip_install(python, *(f"{n}=={v}" for n, v in minimum.items()),
                            f"pytest=={pins['pytest']}")
    pip_install(python, "--no-deps", str(ROOT))
    listed = {normalize(d["name"]): d["version"]
              for d in json.loads(run([str(python), "-m", "pip", "list", "--format", "json"]))}
    wrong = {n: listed.get(n) for n, v in minimum.items()
             if n not in listed or not Specifier(f"=={v}").contains(listed[n])}
    assert not wrong, f"pip did not install the minima exactly: {wrong}"

    # The unit tests, copied out of the repository so that its conftest and pytest options
    # (nbval, the notebook environment, the book build) stay out of it.
    suite = tmp_path / "unit"
    suite.mkdir()
    for path in library_test_files():
        shutil.copy(path, suite / path.name)
    (suite / "pytest.ini").write_text("[pytest]\n")
    env = clean_env(**{**nb_env(), "MPLBACKEND": "Agg"})
    t0 = time.perf_counter()
    run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x"], cwd=suite, env=env)
    unit_s = time.perf_counter() - t0

    assert not failed_imports(python, chapter_imports(), tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(register_kernel(python, tmp_path / "jupyter", "tc-lower")))
    chapter_s = execute_notebook(LOWER_BOUND_CHAPTER, "tc-lower", clean_env(**nb_env()))
    print(f"\nlower bounds: install {install_s:.0f} s, unit tests {unit_s:.0f} s, "
          f"{LOWER_BOUND_CHAPTER.stem} {chapter_s:.0f} s, total {time.perf_counter() - start:.0f} s")
