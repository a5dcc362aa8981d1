"""The ways a reader launches a chapter: a Colab-like runtime and Binder (slow tier).

Both start from a ``git clone`` of this repository, so they test what is committed (HEAD), not
the working tree: CI runs on a clean clone of main, where the two are the same. Locally, commit
first, or point ``TC_LAUNCH_REPO`` at another repository or clone to test that instead.

- Colab-like: a fresh venv holding only what a Colab runtime brings (torch, numpy, matplotlib,
  sympy, tqdm, ipykernel, at the versions of requirements.txt), not the book's package nor
  scikit-learn, scipy, ipywidgets or myst-nb. Chapters run top to bottom in a kernel of that venv
  with ``TC_INSTALL_SPEC`` pointing the generated first cell at the clone, so the first cell must
  install the package and everything it declares.
- Binder: a fresh venv installs ``binder/requirements.txt`` from the clone's root, as repo2docker
  does, then imports every module the chapters import.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from imports import ROOT, chapter_imports, pinned_versions
from nbenv import nb_env
from venvs import (clean_env, execute_notebook, failed_imports, make_venv, module_file,
                   pip_install, register_kernel, run, venv_dir)  # noqa: F401 (a fixture)

# What a Colab runtime has that the book uses (Colab has much more; what matters is what it lacks).
COLAB_PACKAGES = ("torch", "numpy", "matplotlib", "sympy", "tqdm", "ipykernel", "matplotlib-inline")
# The book's dependencies that Colab users may lack: the first cell's install must bring them.
NOT_ON_THE_RUNTIME = {"transformer_challenges", "myst_nb", "sklearn", "scipy", "ipywidgets"}
# Cheap chapters (about 5 s each in fast mode) that between them import torch, numpy, sympy,
# matplotlib, ipywidgets and myst_nb. The scikit-learn chapters take a minute or more each, so
# scikit-learn and scipy are only imported in that kernel's venv after the run.
LAUNCH_CHAPTERS = ("chapters/02-compute/compute-and-memory.ipynb", "chapters/04-position/rope.ipynb")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the repository (HEAD; ``TC_LAUNCH_REPO`` names another source)."""
    source = os.environ.get("TC_LAUNCH_REPO", "").strip() or str(ROOT)
    dest = tmp_path_factory.mktemp("launch") / "clone"
    run(["git", "clone", "--quiet", source, str(dest)])
    return dest


@pytest.mark.slow
def test_chapters_run_in_a_colab_like_runtime(clone, tmp_path, venv_dir, monkeypatch):
    """The first cell installs the package and its dependencies; then the chapters run."""
    start = time.perf_counter()
    pins = pinned_versions()
    python = make_venv(venv_dir)
    install_s = pip_install(python, *(f"{name}=={pins[name]}" for name in COLAB_PACKAGES))
    missing = failed_imports(python, NOT_ON_THE_RUNTIME, tmp_path)
    assert set(missing) == NOT_ON_THE_RUNTIME, (
        f"the Colab-like venv already has {sorted(NOT_ON_THE_RUNTIME - set(missing))}")

    monkeypatch.setenv("JUPYTER_PATH", str(register_kernel(python, tmp_path / "jupyter", "tc-colab")))
    env = clean_env(**nb_env(), TC_INSTALL_SPEC=f"transformer-challenges @ git+file://{clone}")
    times = {}
    for chapter in LAUNCH_CHAPTERS:
        times[Path(chapter).stem] = execute_notebook(clone / chapter, "tc-colab", env)

    # The first cell installed the package into the venv (not an editable link to a checkout).
    installed = module_file(python, "transformer_challenges", tmp_path)
    assert venv_dir.resolve() in installed.parents and "site-packages" in installed.parts, installed
    assert clone not in installed.parents and ROOT not in installed.parents, installed
    # ... and with it every module any chapter imports, not only those of the chapters run here.
    assert not failed_imports(python, chapter_imports(clone), tmp_path)
    print(f"\ncolab-like: venv {install_s:.0f} s, "
          + ", ".join(f"{name} {s:.0f} s" for name, s in times.items())
          + f" (the first includes the first cell's install), total {time.perf_counter() - start:.0f} s")


@pytest.mark.slow
def test_binder_requirements_install_and_import_every_chapter_module(clone, tmp_path, venv_dir):
    """binder/requirements.txt names the PyTorch CPU index so that Binder's image gets the
    CPU build of torch (a 190 MB wheel) instead of PyPI's CUDA build (several GB with its nvidia-*
    wheels). Where that index cannot be reached (the CI machine reaches PyPI only), pip warns and
    takes torch from its other sources (there: the CPU wheel on disk); venvs.PIP keeps it to one
    retry per package, as pip's default five cost about 8 s per package against a dead host."""
    start = time.perf_counter()
    python = make_venv(venv_dir)
    install_s = pip_install(python, "-r", "binder/requirements.txt", cwd=clone, timeout=1800)
    modules = chapter_imports(clone) | {"transformer_challenges"}
    assert not failed_imports(python, modules, tmp_path)
    cuda = run([str(python), "-c", "import torch; print(torch.version.cuda)"], cwd=tmp_path,
               env=clean_env()).strip().splitlines()[-1]
    assert cuda == "None", f"Binder's environment got a CUDA build of torch (CUDA {cuda})"
    print(f"\nbinder: pip install -r binder/requirements.txt {install_s:.0f} s, "
          f"total {time.perf_counter() - start:.0f} s")
