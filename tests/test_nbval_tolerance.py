"""The experimental tier of nbval (tests/nbval_tolerance.py): numbers within tolerance, text exact."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from nbval_tolerance import Tolerance, mismatches, split_numbers

TESTS = Path(__file__).resolve().parent


def test_numbers_are_split_from_text_and_names_keep_their_digits():
    parts, nums = split_numbers("L1H2 loss 0.611 at step 400, 1e-3 and -2.5; 1.02× fp16 12x")
    assert nums == [0.611, 400, 1e-3, -2.5, 1.02]
    assert parts[0] == "L1H2 loss " and parts[-1] == "× fp16 12x"


@pytest.mark.parametrize("fresh, ok", [
    ("val loss 0.611 (step 400)", True),
    ("val loss 0.626 (step 400)", True),        # |diff| 0.015 <= 0.01 + 0.01 * 0.611
    ("val loss 0.628 (step 400)", False),       # |diff| 0.017 > 0.01 + 0.01 * 0.611
    ("val loss 0.611 (step 401)", True),        # 400 * rtol 0.01 = 4 >= 1
    ("val loss 0.611 (step 410)", False),
    ("val acc 0.611 (step 400)", False),        # the words must match exactly
    ("val loss 0.611 (step 400) 1", False),     # so must the count of numbers
    ("val  loss   0.611 (step 400)", True),     # runs of spaces are one space
])
def test_mismatches_within_atol_and_rtol(fresh, ok):
    assert (not mismatches("val loss 0.611 (step 400)", fresh, Tolerance(atol=0.01, rtol=0.01))) == ok


@pytest.mark.parametrize("bad", [None, {}, {"atol": 0}, {"atol": -1}, {"btol": 1}, {"rtol": float("nan")}])
def test_tolerance_metadata_is_validated(bad):
    with pytest.raises(ValueError, match="tolerance|needs metadata"):
        Tolerance.from_metadata({"tolerance": bad} if bad is not None else {})


def _notebook(tmp_path: Path, stored: str, tolerance: dict | None) -> Path:
    cell = nbformat.v4.new_code_cell("print(round(0.5 + 0.1, 3), 'nats')", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text=stored)])
    if tolerance is not None:
        cell.metadata = {"tags": ["nbval-tolerance"], "tolerance": tolerance}
    nb = nbformat.v4.new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("stored, tolerance, passes", [
    ("0.6 nats\n", None, True),                     # exact tier, identical
    ("0.61 nats\n", None, False),                   # exact tier: one digit off fails
    ("0.61 nats\n", {"atol": 0.02}, True),          # experimental tier: within tolerance
    ("0.65 nats\n", {"atol": 0.02}, False),         # experimental tier: beyond it
    ("0.61 bits\n", {"atol": 0.02}, False),         # experimental tier: text still exact
])
def test_nbval_uses_the_tolerance_only_on_tagged_cells(tmp_path, stored, tolerance, passes):
    path = _notebook(tmp_path, stored, tolerance)
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nbval_tolerance",
                           "--nbval", "--nbval-current-env", "--rootdir", str(tmp_path), str(path)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert (proc.returncode == 0) == passes, proc.stdout[-2000:]
