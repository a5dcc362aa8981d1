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


# --- Numbers in prose that a cell prints must be glued (issue #14) -------------------------------
# A heuristic, as the issue allows: a number written in the prose of a page with at least three
# significant digits after a decimal point or in a long integer (0.611, 10.3, 2.25, 164,282,499,072)
# that also appears, written the same way, in that page's stored outputs was almost certainly copied
# from the cell. Glued numbers ({glue:text}, {glue}) are not in the prose source, so they never match.
# Exempt: code, math ($...$, $$...$$, {math}), inline code, and paragraphs that cite a paper ({cite}),
# where a number quoted from the paper may coincide with the page's own result (a table row counts
# as a paragraph of its own).
PROSE_NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3}){2,}|\d{6,}|\d+\.\d+)(?!\d|\.\d|,\d{3})")
_MATH_OR_CODE = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|`[^`\n]*`|\{[a-z:-]+\}`[^`]*`", re.S)


def _significant_digits(number: str) -> int:
    return len(number.replace(",", "").replace(".", "").lstrip("0"))


def prose_numbers(markdown: str) -> set[str]:
    """Numbers with >= 3 significant digits (decimals) or >= 6 digits (integers) in prose paragraphs."""
    found = set()
    units = []
    for paragraph in re.split(r"\n\s*\n", markdown):
        rows = [line for line in paragraph.splitlines() if line.lstrip().startswith("|")]
        units += rows + ["\n".join(line for line in paragraph.splitlines() if line not in rows)]
    for paragraph in units:  # a paragraph, or one row of a table
        if "{cite" in paragraph:
            continue
        text = _MATH_OR_CODE.sub(" ", paragraph)
        for m in PROSE_NUMBER.finditer(text):
            if _significant_digits(m.group()) >= 3:
                found.add(m.group())
    return found


def output_text(nb) -> str:
    """All text a notebook's code cells show: streams and text/plain / text/markdown results."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            for key in ("text/plain", "text/markdown", "text/html"):
                value = out.get("data", {}).get(key)
                if value:
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def unglued_numbers(nb) -> list[str]:
    """Numbers in a notebook's prose (markdown cells) that its outputs also print: paste them with glue."""
    prose = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    shown = output_text(nb)
    return sorted(n for n in prose_numbers(prose)
                  if re.search(r"(?<![\d.,])" + re.escape(n) + r"(?!\d|\.\d|,\d{3})", shown))


if __name__ == "__main__":  # python tests/bookcheck.py chapters/x/page.ipynb ...: list unglued numbers
    import sys
    for arg in sys.argv[1:] or map(str, chapter_notebooks()):
        hits = unglued_numbers(nbformat.read(Path(arg).with_suffix(".ipynb"), as_version=4))
        print(f"{arg}: {', '.join(hits) if hits else 'ok'}")
