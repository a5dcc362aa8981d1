"""nbval extension: start a notebook's kernel again when it dies during start-up.

jupyter_client chooses a kernel's five TCP ports by binding to free ones and releasing them; the
kernel then binds them itself. When pytest-xdist starts two kernels at the same moment (or any
other process takes one of those ports in between), one kernel exits with "Address already in
use" and nbval reports every cell of that notebook as ``RuntimeError: Kernel died before replying
to kernel_info`` (it happened once in CI, on a 2-core machine, in the second pass of ``make
test``). This is a race of the harness, not a property of the notebook, so the start is retried
with fresh ports, a few times, and the last error is raised if every try fails.

Only the start is retried: a kernel that dies while running a cell still fails that cell.
"""
from __future__ import annotations

import functools
import logging
import time

import nbval.kernel

ATTEMPTS = 4
logger = logging.getLogger(__name__)


def retrying(start, attempts: int = ATTEMPTS, pause: float = 1.0):
    """Wrap ``start`` (nbval's ``start_new_kernel``) so a ``RuntimeError`` is retried."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")

    @functools.wraps(start)
    def start_with_retry(*args, **kwargs):
        for attempt in range(1, attempts + 1):
            try:
                return start(*args, **kwargs)
            except RuntimeError as err:  # "Kernel died before replying to kernel_info", port clash
                if attempt == attempts:
                    raise
                logger.warning("kernel start failed (%s); retrying, attempt %d of %d",
                               err, attempt + 1, attempts)
                time.sleep(pause * attempt)

    start_with_retry.__wrapped_start__ = start
    return start_with_retry


def pytest_configure(config):
    # nbval.kernel.RunningKernel looks start_new_kernel up in its module at call time.
    if not hasattr(nbval.kernel.start_new_kernel, "__wrapped_start__"):
        nbval.kernel.start_new_kernel = retrying(nbval.kernel.start_new_kernel)
