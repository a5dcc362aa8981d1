"""Re-run chapter notebooks under the current knobs and show which stored outputs move, and by how much.

Usage: TC_THREADS=2 TC_PERTURB=1 python scripts/drift.py chapters/05-training/training-dynamics.ipynb
       python scripts/drift.py --all

It executes each notebook in the test environment (tests/nbenv.py, with TC_THREADS / TC_PERTURB as
set), compares every code cell's fresh text outputs with the stored ones the way nbval does
(sanitized; cells tagged nbval-tolerance within their tolerance) and prints one line per cell that
is not byte-identical: nbval's cell number, its tier, whether it would pass, and the largest
absolute and relative change of the numbers it prints. This is how a page finds the cells that
belong in the experimental tier and checks that their stated tolerances cover the drift.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbval.plugin import coalesce_streams, get_sanitize_patterns, transform_streams_for_comparison

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nbenv import nb_env  # noqa: E402
from nbval_tolerance import TAG, Tolerance, mismatches, split_numbers  # noqa: E402

SKIP = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
        "image/png", "image/jpeg", "application/vnd.jupyter.widget-view+json"}


def sanitizers() -> list[tuple[str, str]]:
    """The (regex, replacement) pairs of tests/sanitize.cfg, parsed by nbval itself."""
    return get_sanitize_patterns((ROOT / "tests" / "sanitize.cfg").read_text())


def texts(outputs, subs) -> list[tuple[str, str]]:
    """(key, sanitized text) for every compared text in a cell's outputs, in nbval's order."""
    out = []
    for o in transform_streams_for_comparison(coalesce_streams(outputs)):
        # by MIME type, as nbval compares them (a fresh run may list text/plain before text/html)
        items = sorted(o.get("data", {}).items() if "data" in o else o.items())
        for key, val in items:
            if key in SKIP or not isinstance(val, str):
                continue
            for regex, rep in subs:
                val = re.sub(regex, rep, val)
            out.append((key, val))
    return out


def drift(stored: str, fresh: str) -> tuple[float, float] | None:
    """Largest absolute and relative change of the numbers, or None if the text itself changed."""
    s_parts, s_nums = split_numbers(stored)
    f_parts, f_nums = split_numbers(fresh)
    if s_parts != f_parts or len(s_nums) != len(f_nums):
        return None
    diffs = [(abs(a - b), abs(a - b) / max(abs(b), 1e-300)) for a, b in zip(f_nums, s_nums) if a != b]
    return (max(d[0] for d in diffs), max(d[1] for d in diffs)) if diffs else (0.0, 0.0)


def check(path: Path, timeout: int) -> int:
    stored = nbformat.read(path, as_version=4)
    fresh = nbformat.read(path, as_version=4)
    client = NotebookClient(fresh, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    print(f"{path.relative_to(ROOT)}  ({time.perf_counter() - start:.0f} s, "
          f"TC_THREADS={os.environ.get('TC_THREADS')}, TC_PERTURB={os.environ.get('TC_PERTURB', '')})")
    subs, failing, n = sanitizers(), 0, -1
    for s_cell, f_cell in zip(stored.cells, fresh.cells):
        if s_cell.cell_type != "code":
            continue
        n += 1
        tags = s_cell.metadata.get("tags", [])
        if "nbval-ignore-output" in tags or "nbval-skip" in tags or s_cell.execution_count is None:
            continue
        tol = Tolerance.from_metadata(s_cell.metadata) if TAG in tags else None
        a, b = texts(s_cell.outputs, subs), texts(f_cell.outputs, subs)
        if a == b:
            continue
        tier = f"tolerance {tol.atol:g}/{tol.rtol:g}" if tol else "exact"
        worst, ok = (0.0, 0.0), True
        if len(a) != len(b) or any(ka != kb for (ka, _), (kb, _) in zip(a, b)):
            worst, ok = None, False
        else:
            for (_, sa), (_, sb) in zip(a, b):
                d = drift(sa, sb)
                worst = None if d is None or worst is None else (max(worst[0], d[0]), max(worst[1], d[1]))
                ok = ok and tol is not None and not mismatches(sa, sb, tol)
        what = "text changed" if worst is None else f"max |diff| {worst[0]:.3g}, max rel {worst[1]:.3g}"
        print(f"  Cell {n:>2} [{tier}] {'ok  ' if ok else 'FAIL'} {what}")
        failing += not ok
    return failing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("paths", nargs="*")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--timeout", type=int, default=900)
    args = parser.parse_args()
    paths = [Path(p).with_suffix(".ipynb").resolve() for p in args.paths]
    if args.all:
        paths += sorted((ROOT / "chapters").rglob("*.ipynb"))
    if not paths:
        parser.error("give notebooks or --all")
    os.environ.update(nb_env())
    failing = sum(check(p, args.timeout) for p in paths)
    print(f"{failing} cell(s) would fail nbval")
    return 1 if failing else 0


if __name__ == "__main__":
    raise SystemExit(main())
