"""What the book imports, and what pyproject.toml declares (tests/test_deps.py, tests/test_launch.py).

The library (code/) and the chapters (the code cells of chapters/**/*.md) import third-party
modules; every one of them must come from a distribution listed in pyproject's
``[project] dependencies``, or a reader who installs the package (the Colab first cell does
exactly that) meets an ImportError. Imports are found with ``ast``; the standard library is
``sys.stdlib_module_names``; a module is mapped to the distributions that provide it with
``importlib.metadata.packages_distributions()`` (so the mapping is the one of the environment
the tests run in, where every dependency is installed).
"""
from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import jupytext
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGE = "transformer_challenges"

# Modules a chapter may import without a declaration, each with the reason.
PROVIDED_BY_THE_RUNTIME = {
    # Every chapter runs in an IPython kernel: its first cell uses the %pip magic, and Colab,
    # Binder and the tests all start one. The library itself never imports IPython.
    "IPython": "every chapter runs in an IPython kernel (its first cell uses %pip)",
}


def normalize(name: str) -> str:
    """A distribution name in PEP 503 form: ``Scikit_Learn`` -> ``scikit-learn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def top_level_imports(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source`` (Python, or a notebook cell).

    Lines that are IPython magics or shell escapes (``%pip ...``, ``!ls``) are blanked first,
    so a code cell parses; relative imports (``from . import x``) name no distribution.
    """
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    found = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def third_party(modules: Iterable[str]) -> set[str]:
    """``modules`` without the standard library, ``__future__`` and the book's own package."""
    return {m for m in modules
            if m not in sys.stdlib_module_names and m not in ("__future__", OWN_PACKAGE)}


def book_sources(root: Path = ROOT) -> Iterator[tuple[str, str]]:
    """(where, source) for every module of code/ and every code cell of chapters/**/*.md."""
    for path in sorted((root / "code").rglob("*.py")):
        yield str(path.relative_to(root)), path.read_text()
    for path in sorted((root / "chapters").rglob("*.md")):
        notebook = jupytext.read(path)
        for i, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                yield f"{path.relative_to(root)} (code cell {i})", cell.source


@functools.lru_cache(maxsize=None)
def book_imports(root: Path = ROOT) -> dict[str, set[str]]:
    """Third-party top-level module -> the files (or cells) that import it."""
    where: dict[str, set[str]] = {}
    for place, source in book_sources(root):
        for module in third_party(top_level_imports(source)):
            where.setdefault(module, set()).add(place)
    return where


def chapter_imports(root: Path = ROOT) -> set[str]:
    """Third-party top-level modules the chapters import (what a reader's kernel must provide)."""
    return {m for m, places in book_imports(root).items()
            if any(p.startswith("chapters") for p in places)}


def declared_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """pyproject's ``[project] dependencies``, parsed."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(line) for line in project.get("dependencies", [])]


@functools.lru_cache(maxsize=None)
def installed_providers() -> Mapping[str, list[str]]:
    """Top-level module -> distributions, for this environment (cached: it scans site-packages)."""
    return importlib.metadata.packages_distributions()


def undeclared(modules: Iterable[str], declared: Iterable[str],
               providers: Mapping[str, list[str]] | None = None,
               exempt: Iterable[str] = PROVIDED_BY_THE_RUNTIME) -> dict[str, str]:
    """The modules no declared distribution provides, each with the reason.

    ``declared``: distribution names; ``providers``: module -> distributions (default:
    ``importlib.metadata.packages_distributions()`` of this environment). A module that no
    installed distribution provides is reported too: it cannot be checked, so it is not declared.
    """
    providers = installed_providers() if providers is None else providers
    wanted = {normalize(name) for name in declared}
    exempt = set(exempt)
    problems = {}
    for module in sorted(set(modules) - exempt):
        dists = {normalize(d) for d in providers.get(module, [])}
        if not dists:
            problems[module] = ("no installed distribution provides it; install it and declare "
                                "its distribution in pyproject's dependencies")
        elif not dists & wanted:
            problems[module] = (f"provided by {', '.join(sorted(dists))}, which pyproject's "
                                "dependencies do not list; add it (with a tested lower bound)")
    return problems


def pinned_versions(requirements: Path = ROOT / "requirements.txt") -> dict[str, str]:
    """``name==version`` lines of requirements.txt as {normalized name: version}."""
    pins = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins
