"""Checks on the book's notebooks that the tests in test_book.py run (kept importable for reuse)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_CALLS = {"print", "display", "show", "interact"}


def chapter_notebooks() -> list[Path]:
    """Every .ipynb under chapters/ (checkpoints excluded)."""
    return sorted(p for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _python_source(source: str) -> str:
    """Cell source with IPython magics and shell escapes blanked, so ``ast`` can parse it."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def _top_level_calls(tree: ast.Module):
    """Calls reachable at run time of the cell (skips bodies of def/class/lambda)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def cell_should_have_output(source: str) -> bool:
    """True when a code cell prints, displays or plots, or ends with a bare non-call expression."""
    text = _python_source(source)
    if not text.strip():
        return False
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return True  # a cell we cannot read is treated as producing output
    if any(_call_name(c) in OUTPUT_CALLS for c in _top_level_calls(tree)):
        return True
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not text.rstrip().endswith(";"):
        return not isinstance(last.value, (ast.Call, ast.Constant))
    return False


def missing_outputs(nb) -> list[int]:
    """Indices of code cells that should have a stored output but have none (nbval-skip excepted)."""
    missing = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "nbval-skip" in cell.metadata.get("tags", []):
            continue
        if cell_should_have_output(cell.source) and not cell.get("outputs"):
            missing.append(i)
    return missing


def cells_signature(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    """What pairing must preserve: type, source and tags of every cell."""
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a jb-book _toc.yml, in order (root first)."""
    found = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                found.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return found


BOOTSTRAP = re.compile(r'%pip install -q "transformer-challenges @ git\+(?P<url>\S+?)@v(?P<version>[^"]+)"')


def read(path: Path):
    return nbformat.read(path, as_version=4)
