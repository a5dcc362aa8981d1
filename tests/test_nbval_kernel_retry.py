"""The kernel start-up retry of tests/nbval_kernel_retry.py: retries start-up failures only."""
from __future__ import annotations

import nbval.kernel
import pytest

from nbval_kernel_retry import retrying


def flaky(failures: int):
    calls = []

    def start(*args, **kwargs):
        calls.append((args, kwargs))
        if len(calls) <= failures:
            raise RuntimeError("Kernel died before replying to kernel_info")
        return "km", "kc"

    return start, calls


def test_a_kernel_that_dies_while_starting_is_started_again_with_the_same_arguments():
    start, calls = flaky(failures=2)
    assert retrying(start, attempts=3, pause=0)(kernel_name="python3", cwd="x") == ("km", "kc")
    assert calls == [((), {"kernel_name": "python3", "cwd": "x"})] * 3


def test_the_last_error_is_raised_when_every_attempt_fails():
    start, calls = flaky(failures=5)
    with pytest.raises(RuntimeError, match="Kernel died"):
        retrying(start, attempts=3, pause=0)()
    assert len(calls) == 3


def test_other_errors_are_not_retried():
    calls = []

    def start():
        calls.append(1)
        raise KeyError("no such kernel")

    with pytest.raises(KeyError):
        retrying(start, attempts=3, pause=0)()
    assert calls == [1]


def test_attempts_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        retrying(lambda: None, attempts=0)


def test_the_plugin_is_installed_in_this_run():
    assert hasattr(nbval.kernel.start_new_kernel, "__wrapped_start__")
