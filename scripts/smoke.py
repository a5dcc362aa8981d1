"""Full-mode smoke run: execute chapters with TC_SCALE=full TC_SMOKE=1 on the CPU, store nothing.

Usage: python scripts/smoke.py chapters/04-position/rope.md [more.md ...]
       python scripts/smoke.py --all

Full mode is what a GPU reader gets by default; this runs its shapes (models, sequence lengths,
widths) with the steps, seeds and samples capped by each chapter's ``SIZES["smoke"]`` entry, so
that a crash in full mode is found here rather than by the first Colab user. Each chapter's
set-up cell also checks its full-mode GPU memory estimate (costs.gpu_fit_line raises when it
does not fit a 16 GB T4). Prints wall and kernel CPU time per chapter; tests/test_smoke.py runs
the same function and holds each chapter to SMOKE_BUDGET_S.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
from execute import run  # noqa: E402
from nbenv import nb_env  # noqa: E402

SMOKE_BUDGET_S = 120  # per chapter, kernel CPU time (the "each chapter in <= 2 minutes")


def smoke_env() -> dict[str, str]:
    """The test environment (CPU, one thread, no bars) at full scale with the smoke caps on."""
    return {**nb_env(), "TC_SCALE": "full", "TC_SMOKE": "1"}


def smoke(md_path: Path, timeout: int = 600) -> tuple[float, float | None]:
    """Run one chapter in smoke mode; return (wall s, kernel CPU s). Raises on a failing cell."""
    env = {k: v for k, v in os.environ.items() if k != "TC_PERTURB"}
    return run(jupytext.read(md_path), md_path.parent, timeout, env={**env, **smoke_env()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("paths", nargs="*", help="paired .md chapter files")
    parser.add_argument("--all", action="store_true", help="every chapter")
    args = parser.parse_args()
    paths = [Path(p).with_suffix(".md").resolve() for p in args.paths]
    if args.all:
        paths += [Path(p) for p in sorted(glob.glob(str(ROOT / "chapters/**/*.md"), recursive=True))]
    if not paths:
        parser.error("give chapter files or --all")
    for path in paths:
        wall, cpu = smoke(path)
        cpu_text = f"{cpu:7.1f} s kernel CPU" if cpu is not None else " " * 18
        print(f"{wall:7.1f} s wall {cpu_text}  {path.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
