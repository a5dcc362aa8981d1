"""Run-time knobs shared by every chapter: device, scale (fast/full), seeding, progress bars.

Used by every chapter's set-up cell (see the chapter template in the preface).
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterable, Mapping, TypeVar

import numpy as np
import torch

T = TypeVar("T")

SCALES = ("fast", "full")


def device() -> torch.device:
    """Return ``cuda`` when a CUDA GPU is visible, otherwise ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def scale() -> str:
    """Return the experiment size, ``"fast"`` or ``"full"``.

    Read from the environment variable ``TC_SCALE``; when it is unset the default is
    ``"full"`` on a GPU and ``"fast"`` on a CPU.
    """
    raw = os.environ.get("TC_SCALE", "").strip().lower()
    if raw == "":
        return "full" if torch.cuda.is_available() else "fast"
    if raw not in SCALES:
        raise ValueError(
            f"TC_SCALE={os.environ['TC_SCALE']!r} is not a known scale; "
            f"set TC_SCALE to one of {SCALES} or unset it for the default "
            "(full on a GPU, fast on a CPU)."
        )
    return raw


def pick(sizes: Mapping[str, T], which: str | None = None) -> T:
    """Return ``sizes[scale()]``: the one place a chapter's sizes come from."""
    which = scale() if which is None else which
    missing = [s for s in SCALES if s not in sizes]
    if missing:
        raise ValueError(
            f"the sizes dictionary has no entry for {missing}; give one entry per scale {SCALES}."
        )
    if which not in SCALES:
        raise ValueError(f"scale {which!r} is unknown; use one of {SCALES}.")
    return sizes[which]


def seed_everything(seed: int = 0, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; optionally ask PyTorch for deterministic kernels.

    Returns a CPU ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}; pass e.g. seed=0.")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():  # pragma: no cover - GPU only
        torch.cuda.manual_seed_all(seed)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """Wrap ``iterable`` in a tqdm progress bar (``tqdm.auto``).

    The bar is switched off when ``TC_PROGRESS=0``: the test suite and the script that
    stores notebook outputs set it, because a bar's text holds timings that change run to run.
    """
    from tqdm.auto import tqdm

    disable = os.environ.get("TC_PROGRESS", "1").strip() == "0"
    return tqdm(iterable, disable=disable, **kwargs)


def describe() -> str:
    """One line naming the device, the scale and the torch version (for a chapter's set-up cell)."""
    dev = device()
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU"
    return f"device={dev.type} ({name}), scale={scale()}, torch={torch.__version__.split('+')[0]}"
