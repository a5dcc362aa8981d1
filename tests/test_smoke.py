"""Full mode runs: every chapter with TC_SCALE=full TC_SMOKE=1 on the CPU (scripts/smoke.py).

Marked ``slow``: `make test` leaves it out, `make test-slow` (and CI, .ci/run) runs it. Each
chapter must finish within SMOKE_BUDGET_S of kernel CPU time; its set-up cell prints the
full-mode GPU memory estimate and raises when it does not fit a 16 GB T4 (costs.gpu_fit_line).
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import pytest

from bookcheck import ROOT, chapter_notebooks

sys.path.insert(0, str(ROOT / "scripts"))
from smoke import SMOKE_BUDGET_S, smoke  # noqa: E402

CHAPTERS = [p.with_suffix(".md") for p in chapter_notebooks()]
IDS = [str(p.relative_to(ROOT / "chapters")) for p in CHAPTERS]


@pytest.mark.slow
@pytest.mark.parametrize("md", CHAPTERS, ids=IDS)
def test_chapter_runs_in_full_mode_within_budget(md: Path):
    wall, cpu = smoke(md)
    used = cpu if cpu is not None else wall
    assert used <= SMOKE_BUDGET_S, (
        f"{md.name}: the smoke run took {used:.0f} s of kernel CPU (budget {SMOKE_BUDGET_S} s); "
        "cap more steps or samples in its SIZES['smoke'] entry")


@pytest.mark.parametrize("md", CHAPTERS, ids=IDS)
def test_setup_cell_shows_the_full_mode_memory_estimate(md: Path):
    """One line near SIZES: `print(costs.gpu_fit_line(...))` from the full sizes."""
    cells = [c for c in jupytext.read(md.with_suffix(".ipynb")).cells if c.cell_type == "code"]
    setup = next((c for c in cells if "tc.pick(SIZES)" in c.source), None)
    assert setup is not None, f"{md.name}: no cell takes its sizes with tc.pick(SIZES)"
    text = "".join(o.get("text", "") for o in setup.get("outputs", []))
    assert "gpu_fit_line(" in setup.source and "full mode needs ~" in text, (
        f"{md.name}: the set-up cell must print costs.gpu_fit_line(...) for the full sizes")
