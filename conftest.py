"""pytest set-up for the whole repository (root conftest, so it also applies to `pytest chapters/`).

Notebooks run on the CPU at fast scale with progress bars off: tests/nbenv.py holds that
environment; kernels started by nbval inherit it from this process.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from nbenv import NB_ENV  # noqa: E402

os.environ.update(NB_ENV)
