"""Fresh virtual environments for the slow tier (tests/test_launch.py, tests/test_deps.py).

Each test builds a venv in its own temporary folder with the Python that runs the tests, installs
what the scenario allows with pip (the machine's pip configuration applies: on the CI machine it
takes torch==2.13.0 from the CPU wheel on disk), and, where notebooks run, registers the venv's
Python as a Jupyter kernel in a private JUPYTER_PATH, so that nbclient in the test process starts
kernels from that venv and nothing else.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from execute import run as run_notebook  # noqa: E402  (the runner that stores the outputs)

# Transient failures on the network get one retry. A configured index that does not answer at
# all (binder/requirements.txt's PyTorch CPU index, on a machine that only reaches PyPI) costs
# about 8 s per package with pip's default 5 retries; with 1 it costs next to nothing.
PIP = ["-m", "pip", "--disable-pip-version-check", "--retries", "1"]

# Variables of the test process that would let a venv see the repository's own environment.
_LEAKY = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")

_DELETERS: list[subprocess.Popen] = []  # held so that no ResourceWarning fires while they run


@pytest.fixture
def venv_dir(tmp_path) -> Path:
    """A folder for one test's venv, deleted afterwards in the background.

    A venv here holds 1 to 2 GB in tens of thousands of files, and deleting one took 115 to 140 s
    on a busy machine of the CI machine's kind (ext4 mounted with online discard). Left in place,
    pytest would delete it at the start of a later run (it keeps the last three runs' temporary
    folders), so that run would wait instead. The folder is renamed at once and removed by a
    detached ``rm`` that nothing waits for.
    """
    path = tmp_path / "venv"
    yield path
    if path.exists():
        doomed = path.rename(tmp_path / "venv.deleted")
        _DELETERS.append(subprocess.Popen(["rm", "-rf", "--", str(doomed)], start_new_session=True,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without the variables that point into the test's own environment, plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 900) -> str:
    """Run ``cmd``; return its output, or fail the test with the command and the output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise AssertionError(f"exit {proc.returncode}: {' '.join(map(str, cmd))}\n{tail}")
    return proc.stdout


def make_venv(where: Path) -> Path:
    """A fresh venv at ``where`` with an up-to-date pip (as the Makefile makes .venv); its python."""
    run([sys.executable, "-m", "venv", str(where)])
    python = where / "bin" / "python"
    run([str(python), *PIP, "install", "--quiet", "--upgrade", "pip"])
    return python


def pip_install(python: Path, *args: str, cwd: Path | None = None, timeout: float = 900) -> float:
    """``python -m pip install --quiet --no-compile *args`` (modules compile when first imported:
    the tests import a fraction of what they install); return the wall time in seconds."""
    start = time.perf_counter()
    run([str(python), *PIP, "install", "--quiet", "--no-compile", *args], cwd=cwd, timeout=timeout)
    return time.perf_counter() - start


def failed_imports(python: Path, modules: set[str], cwd: Path) -> dict[str, str]:
    """{module: error} for the modules that ``python`` (run in ``cwd``) cannot import."""
    probe = ("import importlib, json, sys\n"
             "bad = {}\n"
             "for m in sys.argv[1:]:\n"
             "    try:\n"
             "        importlib.import_module(m)\n"
             "    except Exception as e:\n"
             "        bad[m] = f'{type(e).__name__}: {e}'\n"
             "print(json.dumps(bad))\n")
    out = run([str(python), "-c", probe, *sorted(modules)], cwd=cwd,
              env=clean_env(MPLBACKEND="Agg"))
    return json.loads(out.strip().splitlines()[-1])


def module_file(python: Path, module: str, cwd: Path) -> Path:
    """Where ``python`` (run in ``cwd``) imports ``module`` from."""
    out = run([str(python), "-c", f"import {module} as m; print(m.__file__)"], cwd=cwd)
    return Path(out.strip().splitlines()[-1]).resolve()


def register_kernel(python: Path, prefix: Path, name: str) -> Path:
    """Install a kernelspec for ``python`` under ``prefix``; return the dir for JUPYTER_PATH."""
    run([str(python), "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", name,
         "--display-name", name])
    return prefix / "share" / "jupyter"


def execute_notebook(path: Path, kernel_name: str, env: dict[str, str],
                     timeout: int = 600) -> float:
    """Execute the notebook at ``path`` top to bottom in a fresh ``kernel_name`` kernel started
    in its folder with environment ``env``; return the wall time. A failing cell raises
    nbclient's CellExecutionError (which names the cell and shows its traceback)."""
    wall, _ = run_notebook(nbformat.read(path, as_version=4), path.parent, timeout, kernel_name, env)
    return wall
