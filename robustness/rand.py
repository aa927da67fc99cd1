"""One small interface over the two random sources a perturbation may be handed.

Families accept either a `numpy.random.Generator` (what `apply_perturbation` passes, derived per
example) or a `random.Random`; both are explicit objects, never the global RNG, so concurrent
requests cannot disturb each other's streams.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

RandomSource = np.random.Generator | random.Random

T = TypeVar("T")


class Draw:
    """Uniform draws from a Generator or a Random, with the same meaning for both."""

    __slots__ = ("_rng",)

    def __init__(self, rng: RandomSource) -> None:
        if not isinstance(rng, np.random.Generator | random.Random):
            raise TypeError(
                f"rng must be a numpy.random.Generator or random.Random, got {type(rng).__name__}"
            )
        self._rng = rng

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        if n <= 0:
            raise ValueError(f"below() needs n >= 1, got {n}")
        if isinstance(self._rng, random.Random):
            return self._rng.randrange(n)
        return int(self._rng.integers(n))

    def unit(self) -> float:
        """A uniform float in [0, 1)."""
        return float(self._rng.random())

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    def permutation(self, n: int) -> list[int]:
        """A uniform random order of range(n)."""
        if isinstance(self._rng, random.Random):
            return self._rng.sample(range(n), n)
        return [int(i) for i in self._rng.permutation(n)]


def edit_count(severity: float, units: int) -> int:
    """How many of `units` eligible units a family edits at `severity`.

    ceil(severity * units): 0 at severity 0, every unit at severity 1, and at least one unit for any
    positive severity so that a small severity on a short text is not silently the identity. The
    epsilon absorbs float error such as 0.7 * 10 == 7.000000000000001.
    """
    require_unit_severity(severity)
    if severity == 0 or units == 0:
        return 0
    return max(1, min(units, math.ceil(severity * units - 1e-9)))


def require_unit_severity(severity: float) -> None:
    """ValueError unless `severity` is a number in [0, 1] (NaN included in the refusals)."""
    if not (isinstance(severity, int | float) and 0.0 <= severity <= 1.0):
        raise ValueError(f"severity must be a number in [0, 1], got {severity!r}")
