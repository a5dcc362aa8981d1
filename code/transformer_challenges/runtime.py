"""Run-time knobs shared by every chapter: device, scale (fast/full), seeding, progress bars,
and the "another machine" stand-in ``TC_PERTURB`` used by the test suite.

Used by every chapter's set-up cell (see the chapter template in the preface).
"""
from __future__ import annotations

import os
import random
import weakref
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


def smoke() -> bool:
    """Whether ``TC_SMOKE=1``: full mode with its steps and samples capped (a CPU check that
    full-mode shapes run); see :func:`pick`. ``TC_SMOKE`` unset, empty or ``0`` is off."""
    raw = os.environ.get("TC_SMOKE", "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"TC_SMOKE={raw!r} is not 0 or 1; set TC_SMOKE=1 for the capped full-mode "
                         "smoke run, or unset it.")
    return raw == "1"


def pick(sizes: Mapping[str, Any], which: str | None = None) -> Any:
    """Return ``sizes[scale()]``: the one place a chapter's sizes come from.

    ``sizes`` has an entry per scale (``"fast"``, ``"full"``) and may have a ``"smoke"`` entry:
    a dictionary of overrides for the full entry (steps, seeds, samples, sweep lengths; never
    model shapes) applied when ``TC_SMOKE=1`` and the scale is full, so that the test suite can
    run every chapter's full-mode shapes on a CPU in minutes.
    """
    which = scale() if which is None else which
    missing = [s for s in SCALES if s not in sizes]
    if missing:
        raise ValueError(
            f"the sizes dictionary has no entry for {missing}; give one entry per scale {SCALES}."
        )
    if which not in SCALES:
        raise ValueError(f"scale {which!r} is unknown; use one of {SCALES}.")
    unknown = [k for k in sizes if k not in SCALES + ("smoke",)]
    if unknown:
        raise ValueError(f"the sizes dictionary has unknown entries {unknown}; use {SCALES} "
                         "and optionally 'smoke' (overrides of the full entry).")
    chosen = sizes[which]
    if which == "full" and "smoke" in sizes:
        caps = sizes["smoke"]
        if not isinstance(caps, Mapping) or not isinstance(chosen, Mapping):
            raise ValueError("the 'smoke' entry overrides keys of the 'full' dictionary: both "
                             "must be dictionaries.")
        extra = [k for k in caps if k not in chosen]
        if extra:
            raise ValueError(f"the 'smoke' entry overrides {extra}, which the 'full' entry does not "
                             "have; override only keys of the full sizes.")
        if smoke():
            chosen = {**chosen, **caps}
    return chosen


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
    mode = scale() + (" (smoke: steps and samples capped)" if scale() == "full" and smoke() else "")
    return f"device={dev.type} ({name}), scale={mode}, torch={torch.__version__.split('+')[0]}"


# --- A stand-in for "another machine" -------------------------------------------------------
# Two CPUs round the same float32 sums differently (vector width, FMA, summation order); after a
# few hundred optimiser steps that last-bit noise grows into visibly different losses. The test
# suite imitates it on one machine: with TC_PERTURB=k (k >= 1) every optimiser, on its first
# step, multiplies each parameter it trains by (1 + PERTURB_ULPS * eps * z), z ~ N(0, 1), with
# eps the machine epsilon of the parameter's dtype (about 1e-6 relative noise in float32,
# 2e-15 in float64). The noise comes from a generator seeded with k and a running count, never
# from the global RNG, so the book's seeds, data and sampling are untouched.
PERTURB_ULPS = 8


def perturbation() -> int | None:
    """The seed k of ``TC_PERTURB=k`` (k >= 1), or ``None`` when the knob is unset, empty or 0."""
    raw = os.environ.get("TC_PERTURB", "").strip()
    if raw in ("", "0"):
        return None
    if not raw.isdigit():
        raise ValueError(f"TC_PERTURB={raw!r} is not a non-negative integer; set e.g. TC_PERTURB=1 "
                         "(or unset it to switch the perturbation off).")
    return int(raw)


@torch.no_grad()
def perturb_(params: Iterable[torch.Tensor], generator: torch.Generator,
             ulps: float = PERTURB_ULPS) -> int:
    """Multiply each floating-point tensor in ``params`` in place by ``1 + ulps * eps * N(0, 1)``.

    Returns how many tensors were perturbed. The noise is drawn on the CPU from ``generator``.
    """
    if ulps < 0:
        raise ValueError(f"ulps must be >= 0, got {ulps}; use e.g. ulps=8.")
    count = 0
    for p in params:
        if not torch.is_floating_point(p):
            continue
        z = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        p.mul_((1 + ulps * torch.finfo(p.dtype).eps * z).to(device=p.device, dtype=p.dtype))
        count += 1
    return count


_perturbed: "weakref.WeakSet[torch.optim.Optimizer]" = weakref.WeakSet()
_perturb_state = {"hook": None, "count": 0}


def _perturb_on_first_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    if optimizer in _perturbed:
        return
    _perturbed.add(optimizer)
    k = perturbation()
    if k is None:
        return
    _perturb_state["count"] += 1
    gen = torch.Generator().manual_seed(1_000_003 * k + _perturb_state["count"])
    perturb_((p for group in optimizer.param_groups for p in group["params"]), gen)


def install_perturbation() -> bool:
    """Register the first-step perturbation for every ``torch.optim`` optimiser when
    ``TC_PERTURB`` is set (idempotent); return whether it is active."""
    if perturbation() is None:
        return False
    if _perturb_state["hook"] is None:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        _perturb_state["hook"] = register_optimizer_step_pre_hook(_perturb_on_first_step)
    return True


install_perturbation()
