"""nbval extension: the *experimental* tier of compared outputs (see README, "What is compared").

A code cell tagged ``nbval-tolerance`` carries its tolerance in its own metadata, visible in the
MyST source next to the tag::

    ```{code-cell} ipython3
    :tags: [nbval-tolerance]
    :tolerance: {atol: 0.02, rtol: 0}
    ```

For such a cell nbval still compares every text output (stream, ``text/plain``, ``text/html``),
but the numbers in it are compared within ``|test - stored| <= atol + rtol * |stored|`` while
everything between the numbers must match exactly (runs of spaces count as one space, so a column
that gains a digit does not fail). Any other cell is compared byte for byte, as nbval does.

The tolerance is stated by the page, not guessed here: each page measures the seed-to-seed spread
of what it prints and derives the cell's tolerance from it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nbval.plugin import IPyNbCell

TAG = "nbval-tolerance"
KEY = "tolerance"

# A number on its own: not glued to a letter, digit, dot or underscore on either side, so the
# digits in names such as "L1H2" or "fp16" are text, compared exactly.
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance of one cell (``|a - b| <= atol + rtol * |b|``)."""

    atol: float = 0.0
    rtol: float = 0.0

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Tolerance":
        """Read ``metadata['tolerance']``; raise ``ValueError`` naming the fix when it is unusable."""
        raw = metadata.get(KEY)
        if not isinstance(raw, dict) or not set(raw) <= {"atol", "rtol"} or not raw:
            raise ValueError(f"a cell tagged {TAG!r} needs metadata {KEY}: {{atol: ..., rtol: ...}}, "
                             f"got {raw!r}; add ':{KEY}: {{atol: 0.01}}' under the cell's tags")
        tol = cls(float(raw.get("atol", 0.0)), float(raw.get("rtol", 0.0)))
        if tol.atol < 0 or tol.rtol < 0 or tol.atol + tol.rtol == 0 or not math.isfinite(tol.atol + tol.rtol):
            raise ValueError(f"tolerance {raw!r} must be finite, non-negative and not all zero; "
                             "an exact comparison needs no tag")
        return tol


def split_numbers(text: str) -> tuple[list[str], list[float]]:
    """The text between numbers (whitespace runs collapsed) and the numbers themselves."""
    parts, numbers, last = [], [], 0
    for match in NUMBER.finditer(text):
        parts.append(text[last:match.start()])
        numbers.append(float(match.group()))
        last = match.end()
    parts.append(text[last:])
    return [re.sub(r"[ \t]+", " ", p) for p in parts], numbers


def mismatches(stored: str, fresh: str, tol: Tolerance) -> list[str]:
    """Why ``fresh`` does not match ``stored`` within ``tol``; empty when it does."""
    s_parts, s_nums = split_numbers(stored)
    f_parts, f_nums = split_numbers(fresh)
    if len(s_nums) != len(f_nums) or s_parts != f_parts:
        where = next((f"{a!r} vs {b!r}" for a, b in zip(s_parts, f_parts) if a != b),
                     f"{len(s_nums)} numbers stored, {len(f_nums)} now")
        return [f"the text around the numbers differs ({where}); only numbers may move"]
    out = []
    for i, (a, b) in enumerate(zip(f_nums, s_nums)):
        if not abs(a - b) <= tol.atol + tol.rtol * abs(b):
            out.append(f"number {i}: stored {b:g}, now {a:g}; |diff| = {abs(a - b):.3g} > "
                       f"atol + rtol*|stored| = {tol.atol + tol.rtol * abs(b):.3g}")
    return out


class TolerantText(str):
    """A sanitized output string whose ``!=`` is the tolerant comparison above."""

    tol: Tolerance

    def __new__(cls, value: str, tol: Tolerance):
        obj = super().__new__(cls, value)
        obj.tol = tol
        return obj

    def __eq__(self, other):
        return isinstance(other, str) and not mismatches(str(self), str(other), self.tol)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = str.__hash__


def _tolerance_of(cell_item) -> Tolerance | None:
    if TAG not in cell_item.cell.metadata.get("tags", []):
        return None
    return Tolerance.from_metadata(cell_item.cell.metadata)


_sanitize = IPyNbCell.sanitize
_compare = IPyNbCell.compare_outputs


def _tolerant_sanitize(self, s):
    s = _sanitize(self, s)
    tol = _tolerance_of(self)
    return TolerantText(s, tol) if tol is not None and isinstance(s, str) else s


def _tolerant_compare(self, test, ref, skip_compare=None):
    ok = _compare(self, test, ref, skip_compare)
    tol = _tolerance_of(self)
    if not ok and tol is not None:
        self.comparison_traceback.insert(0, f"cell tagged {TAG} with {tol}: numbers may move within "
                                            "the tolerance, the text around them may not")
    return ok


def pytest_configure(config):
    """Install the tolerant comparison into nbval (only cells tagged ``nbval-tolerance`` use it)."""
    IPyNbCell.sanitize = _tolerant_sanitize
    IPyNbCell.compare_outputs = _tolerant_compare
