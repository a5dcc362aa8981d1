"""The environment every notebook runs in under test (and when its outputs are stored).

CPU only, fast scale, progress bars off (their text holds timings), one fixed hash seed, and by
default one intra-op thread. The root conftest.py applies it to the pytest process, whose kernels
inherit it; scripts/execute.py applies the canonical version before storing outputs, so stored and
re-computed outputs come from the same setup.

Two knobs make one machine stand in for another (README, "What is compared"):
- ``TC_THREADS=n`` runs the kernels with n intra-op threads (default 1);
- ``TC_PERTURB=k`` (k >= 1) makes every optimiser perturb its parameters by a few ulps on its
  first step (transformer_challenges.runtime.install_perturbation), the size of the rounding
  differences between two CPUs. The kernels inherit it unchanged from the environment.
"""
from __future__ import annotations

import os


def nb_env(threads: str | None = None) -> dict[str, str]:
    """The notebook environment; ``threads`` defaults to ``TC_THREADS`` (else 1)."""
    threads = threads or os.environ.get("TC_THREADS", "").strip() or "1"
    if not threads.isdigit() or int(threads) < 1:
        raise ValueError(f"TC_THREADS={threads!r} must be a positive integer, e.g. TC_THREADS=2")
    return {
        "TC_SCALE": "fast",
        "TC_SMOKE": "0",  # the capped full-mode run is tests/test_smoke.py's, never nbval's
        "TC_PROGRESS": "0",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONHASHSEED": "0",
        # Stored outputs are made with one thread: a parallel reduction splits its sum by thread
        # count. Compared outputs must not depend on it (the second test pass uses 2 threads).
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        # numpy's OpenBLAS (scikit-learn, numpy matrix products) stays on one thread: its worker
        # threads busy-wait, and on two busy cores a two-thread scikit-learn fit ran 5x slower
        # (11 s -> 53 s; 210 s inside the second test pass). The knob is about torch's kernels.
        "OPENBLAS_NUM_THREADS": "1",
        "TC_THREADS": threads,
        # Idle OpenMP threads sleep instead of spinning. Results are unchanged (same threads, same
        # work split); on a loaded machine training loops ran 9x faster with it (99 s -> 11 s).
        "OMP_WAIT_POLICY": "PASSIVE",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }


NB_ENV = nb_env()
# What scripts/execute.py stores outputs with: one thread, no perturbation.
CANONICAL_ENV = nb_env("1")
