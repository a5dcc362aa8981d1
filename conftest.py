"""pytest set-up for the whole repository (root conftest, so it also applies to `pytest chapters/`).

Notebooks run on the CPU at fast scale with progress bars off: tests/nbenv.py holds that
environment; kernels started by nbval inherit it from this process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))
from nbenv import NB_ENV  # noqa: E402

os.environ.update(NB_ENV)

# The experimental tier of compared outputs: cells tagged nbval-tolerance (tests/nbval_tolerance.py);
# a kernel that dies while starting (a port race between xdist workers) is started again.
pytest_plugins = ["nbval_tolerance", "nbval_kernel_retry"]


@pytest.fixture(scope="session")
def built_site(tmp_path_factory, worker_id) -> Path:
    """The book built once per test run, warnings as errors; returns its html folder.

    Under pytest-xdist every worker asks for it; the first builds it into the run's shared
    temporary folder under a file lock, the others wait and reuse that build and its verdict.
    """
    base = tmp_path_factory.getbasetemp()
    out = (base if worker_id == "master" else base.parent) / "book"
    with FileLock(str(out) + ".lock"):
        verdict = out / "build-verdict.json"
        if not verdict.exists():
            out.mkdir(exist_ok=True)
            root = Path(__file__).resolve().parent
            jupyter_book = Path(sys.executable).parent / "jupyter-book"
            proc = subprocess.run([str(jupyter_book), "build", str(root), "--path-output", str(out),
                                   "-W", "-n", "--keep-going"], capture_output=True, text=True, timeout=1200)
            lines = proc.stdout.splitlines() + proc.stderr.splitlines()
            warnings = [line for line in lines if "WARNING" in line]
            verdict.write_text(json.dumps({"ok": proc.returncode == 0 and not warnings,
                                           "report": warnings or lines[-40:]}))
        result = json.loads(verdict.read_text())
    assert result["ok"], "book build failed:\n" + "\n".join(result["report"])
    return out / "_build" / "html"
