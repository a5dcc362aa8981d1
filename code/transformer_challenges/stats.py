"""Seed-to-seed spread of a trained result, and the nbval tolerance derived from it.

Used by every chapter that trains a model: a conclusion drawn from training is shown over several
seeds, and a number printed from training is compared (nbval tier "experimental", tag
``nbval-tolerance``) within a tolerance that comes from this spread, not from a guess.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

#: k in the k-sigma rule for tolerances (see :meth:`Spread.tolerance`).
SIGMAS = 3.0


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and range of one quantity measured over seeds."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); 0 for a single value."""
        if self.n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def tolerance(self, averaged: int = 1, sigmas: float = SIGMAS) -> float:
        """``sigmas * std * sqrt(2 / averaged)``: the k-sigma bound on the difference between the
        stored value and one re-computed on another machine, treating the two as independent draws
        (the worst case: rounding noise grown until the run is as different as another seed).
        ``averaged`` is how many seeds the printed number averages (1 for a single run)."""
        if averaged < 1:
            raise ValueError(f"averaged must be >= 1 (seeds in the printed mean), got {averaged}.")
        return sigmas * self.std * math.sqrt(2 / averaged)

    def format(self, digits: int = 3) -> str:
        """``"mean ± std (n seeds)"`` with ``digits`` decimals."""
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n} seeds)"

    def __str__(self) -> str:
        return self.format()


def spread(values: Iterable[float]) -> Spread:
    """The :class:`Spread` of ``values`` (one per seed); raises on an empty or non-finite input."""
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("spread() needs at least one value (one per seed).")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"spread() got a non-finite value in {vals}; check for a diverged run.")
    return Spread(vals)


def k_of_n(flags: Sequence[bool], what: str = "seeds") -> str:
    """``"k of n seeds"``: how many runs a verdict holds for."""
    flags = [bool(f) for f in flags]
    if not flags:
        raise ValueError("k_of_n() needs at least one verdict.")
    return f"{sum(flags)} of {len(flags)} {what}"
