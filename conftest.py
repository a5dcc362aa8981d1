"""pytest set-up for the whole repository (root conftest, so it also applies to `pytest chapters/`).

Notebooks run on the CPU at fast scale with progress bars off: tests/nbenv.py holds that
environment; kernels started by nbval inherit it from this process.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from nbenv import NB_ENV  # noqa: E402

os.environ.update(NB_ENV)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The book built once per test session, warnings as errors; returns its html folder."""
    out = tmp_path_factory.mktemp("book")
    root = Path(__file__).resolve().parent
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jupyter_book), "build", str(root), "--path-output", str(out),
                           "-W", "-n", "--keep-going"], capture_output=True, text=True, timeout=1200)
    lines = proc.stdout.splitlines() + proc.stderr.splitlines()
    warnings = [line for line in lines if "WARNING" in line]
    assert proc.returncode == 0 and not warnings, (
        "book build failed:\n" + "\n".join(warnings or lines[-40:]))
    return out / "_build" / "html"
