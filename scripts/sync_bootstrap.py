"""Write the Colab/Binder bootstrap cell into every chapter, generated from one place.

Usage: python scripts/sync_bootstrap.py          # rewrite the first code cell of every chapter
       python scripts/sync_bootstrap.py --check  # exit 1 and list the chapters that differ

The cell's text comes from tests/bookcheck.py (bootstrap_source): the repository URL from
_config.yml and the tag v<version> of the package. The cell has no output, so the stored
outputs of the .ipynb are kept; the .md and the .ipynb are both rewritten. scripts/execute.py
applies the same cell before it runs a chapter, and tests/test_book.py fails when a copy differs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from bookcheck import bootstrap_source, chapter_notebooks  # noqa: E402


def apply(nb) -> bool:
    """Put the generated bootstrap into ``nb``'s first code cell; return whether it changed."""
    first = next(c for c in nb.cells if c.cell_type == "code")
    wanted = bootstrap_source()
    if first.source == wanted:
        return False
    first.source = wanted
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report chapters that differ")
    args = parser.parse_args()
    stale = []
    for ipynb in chapter_notebooks():
        md = ipynb.with_suffix(".md")
        nb = jupytext.read(ipynb)  # outputs are kept: only the first cell's source changes
        md_nb = jupytext.read(md)
        changed = apply(nb) | apply(md_nb)
        if not changed:
            continue
        stale.append(str(ipynb.relative_to(ROOT)))
        if not args.check:
            jupytext.write(nb, ipynb)
            jupytext.write(md_nb, md, fmt="md:myst")
    for path in stale:
        print(("stale: " if args.check else "rewrote: ") + path)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
