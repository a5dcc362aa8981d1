"""transformer_challenges: the library behind the book "Transformer: review and challenges".

Import it as ``tc``. The top level re-exports the run-time knobs every chapter uses; the
submodules hold each chapter's reusable code: ``model``, ``attention``, ``data``, ``training``
(Chapter 1), ``flash``, ``sparse`` and ``attncost`` (efficient attention), ``explorers`` and ``interp_explorer`` (the static site's explorers), ``costs`` and ``memory`` (compute and memory), ``positional`` and ``vision``
(position), ``dynamics`` (training), ``interp`` and ``induction`` (interpretability), ``scaling``
and ``dedup`` (data), ``kvcache`` (serving), ``clip`` and ``ssm`` (beyond language, outlook); ``stats`` (seed spread and nbval
tolerances, every chapter that trains).
"""
from . import stats
from .runtime import describe, device, pick, progress, scale, seed_everything, smoke

__version__ = "0.1.0"

__all__ = ["stats", "describe", "device", "pick", "progress", "scale", "seed_everything", "smoke",
           "__version__"]
