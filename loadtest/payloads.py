"""Request bodies built from real multilingual sentence pairs (JSONL), reproducibly."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Field names of the data sets this project reads, in the order they are tried.
_PAIR_FIELDS = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("text", "text_pair"))

# The native predict body: {"inputs": [{"text": ..., "text_pair": ...}, ...]}.
Body = dict[str, list[dict[str, str]]]


@dataclass(frozen=True)
class InputsMix:
    """How many inputs a request carries: sizes and their probabilities."""

    sizes: tuple[int, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str) -> InputsMix:
        """'1:0.7,4:0.2,16:0.1' -> sizes (1, 4, 16) with those weights; '8' -> always 8."""
        sizes: list[int] = []
        weights: list[float] = []
        for part in spec.split(","):
            size, _, weight = part.strip().partition(":")
            try:
                sizes.append(int(size))
                weights.append(float(weight) if weight else 1.0)
            except ValueError as exc:
                raise ValueError(
                    f"bad inputs mix {spec!r}: use SIZE[:WEIGHT],... e.g. 1:0.7,4:0.3"
                ) from exc
        if any(s < 1 for s in sizes) or any(w <= 0 for w in weights):
            raise ValueError(f"bad inputs mix {spec!r}: sizes must be >= 1 and weights > 0")
        return cls(tuple(sizes), tuple(weights))

    @property
    def mean(self) -> float:
        total = sum(self.weights)
        return sum(s * w for s, w in zip(self.sizes, self.weights, strict=True)) / total


def read_pairs(paths: Iterable[Path]) -> list[dict[str, str]]:
    """Every row of the JSONL files as {"text", "text_pair"}; fails on a file with no usable rows."""
    pairs: list[dict[str, str]] = []
    for path in paths:
        found = 0
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number} is not JSON: {exc.msg}") from exc
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number} is not a JSON object")
                for first, second in _PAIR_FIELDS:
                    if isinstance(row.get(first), str) and isinstance(row.get(second), str):
                        pairs.append({"text": row[first], "text_pair": row[second]})
                        found += 1
                        break
        if not found:
            raise ValueError(f"{path} has no rows with any of the field pairs {_PAIR_FIELDS}")
    return pairs


class PayloadFactory:
    """Seeded: the n-th body of a run is the same every time, whatever the timing."""

    def __init__(self, pairs: Sequence[dict[str, str]], mix: InputsMix, seed: int = 0) -> None:
        if not pairs:
            raise ValueError("no sentence pairs to build requests from")
        self._pairs = pairs
        self._mix = mix
        self._rng = random.Random(seed)

    def next_body(self) -> Body:
        size = self._rng.choices(self._mix.sizes, weights=self._mix.weights)[0]
        return {"inputs": [self._rng.choice(self._pairs) for _ in range(size)]}
