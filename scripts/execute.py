"""Execute chapter notebooks and store their outputs, the way the tests will re-run them.

Usage: python scripts/execute.py chapters/01-overview/transformer-at-a-glance.md [more.md ...]
       python scripts/execute.py --all

For each paired MyST file it reads the .md (the source people edit), executes it in a fresh
kernel with the test suite's environment (CPU, TC_SCALE=fast, progress bars off), writes the
.ipynb with outputs and re-writes the .md, so the pair is in sync. It prints each notebook's
wall time, which is what the "under 2 minutes" budget is checked against, and the kernel's CPU
time (user + system), which other work on a busy machine inflates much less than the wall time. Widget state is not
stored: widgets need a live kernel (Colab/Binder), and on the static site they would load
JavaScript from a CDN.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

import jupytext
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from nbenv import CANONICAL_ENV  # noqa: E402  (the environment the tests run notebooks in)
from sync_bootstrap import apply as apply_bootstrap  # noqa: E402  (the generated first cell)

FORMATS = "ipynb,md:myst"


def run(nb, cwd: Path, timeout: int, kernel_name: str = "python3",
        env: dict[str, str] | None = None) -> tuple[float, float | None]:
    """Execute ``nb`` in place in a fresh ``kernel_name`` kernel started in ``cwd`` (with environment
    ``env``, default this process's); return (wall s, kernel CPU s). A failing cell raises."""
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(cwd)}})
    cpu = {}

    def kernel_cpu_time(**_):  # called after every cell, while the kernel runs; the last call counts
        try:
            proc = psutil.Process(client.km.provisioner.process.pid)
            t = proc.cpu_times()
            cpu["s"] = t.user + t.system + t.children_user + t.children_system
        except (AttributeError, psutil.Error):  # not a local kernel: report wall time only
            pass

    client.on_cell_executed = kernel_cpu_time
    start = time.perf_counter()
    client.execute(**({"env": env} if env is not None else {}))
    return time.perf_counter() - start, cpu.get("s")


def execute(md_path: Path, timeout: int) -> tuple[float, float | None]:
    nb = jupytext.read(md_path)
    apply_bootstrap(nb)
    nb.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    elapsed, cpu = run(nb, md_path.parent, timeout)
    for cell in nb.cells:  # execution timestamps would make every re-run a diff
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            # A live widget needs a kernel; on the static page it would only pull the widget
            # manager from a CDN (the site must work offline). Keep the plain-text fallback.
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)
    nb.metadata.pop("widgets", None)
    jupytext.write(nb, md_path.with_suffix(".ipynb"))
    jupytext.write(nb, md_path, fmt="md:myst")
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("paths", nargs="*", help="paired .md (or .ipynb) chapter files")
    parser.add_argument("--all", action="store_true", help="every notebook under chapters/")
    parser.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    args = parser.parse_args()
    paths = [Path(p) for p in args.paths]
    if args.all:
        paths += [Path(p) for p in sorted(glob.glob(str(ROOT / "chapters/**/*.md"), recursive=True))]
    if not paths:
        parser.error("give chapter files or --all")
    # Outputs are always stored from the canonical environment (one thread, no perturbation);
    # the knobs TC_THREADS / TC_PERTURB are for re-running, never for storing.
    os.environ.update(CANONICAL_ENV)
    os.environ.pop("TC_PERTURB", None)
    for path in paths:
        md = path.with_suffix(".md").resolve()
        if not md.exists():
            print(f"{md}: no paired .md file; create it first", file=sys.stderr)
            return 2
        elapsed, cpu = execute(md, args.timeout)
        cpu_text = f"{cpu:7.1f} s kernel CPU" if cpu is not None else " " * 18
        print(f"{elapsed:7.1f} s wall {cpu_text}  {md.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
