"""Which task each training step draws from, and which examples form each batch.

Multi-task phases mix tasks of very different sizes. Three standard strategies:
- proportional: p_i = n_i / sum n (a big task dominates);
- capped: p_i = min(n_i, cap) / sum min(n_j, cap) (examples-proportional mixing with a cap);
- temperature: p_i = n_i^(1/T) / sum n_j^(1/T) (T = 1 is proportional, large T tends to uniform).
Batches are task-homogeneous (each task has its own head). The whole schedule is a pure function
of the sizes, the strategy and the seed, so every DDP rank computes the same one, and a resumed
run skips exactly the steps it already took.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Strategy = Literal["proportional", "capped", "temperature"]


def task_probabilities(
    sizes: Mapping[str, int],
    strategy: Strategy,
    *,
    cap: int | None = None,
    temperature: float = 2.0,
) -> dict[str, float]:
    if not sizes or any(n <= 0 for n in sizes.values()):
        raise ValueError(f"every task needs at least one example, got sizes {dict(sizes)}")
    if strategy == "proportional":
        weights = {t: float(n) for t, n in sizes.items()}
    elif strategy == "capped":
        if cap is None or cap <= 0:
            raise ValueError("capped sampling needs a positive cap")
        weights = {t: float(min(n, cap)) for t, n in sizes.items()}
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        weights = {t: float(n) ** (1.0 / temperature) for t, n in sizes.items()}
    else:
        raise ValueError(f"unknown sampling strategy {strategy!r}")
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def examples_per_epoch(sizes: Mapping[str, int], strategy: Strategy, cap: int | None) -> int:
    """An epoch is one pass over the data, or over the capped data when capping."""
    if strategy == "capped" and cap is not None:
        return sum(min(n, cap) for n in sizes.values())
    return sum(sizes.values())


@dataclass(frozen=True)
class Step:
    task: str
    # Indices into that task's example list; a global batch, split across ranks by the loop.
    indices: tuple[int, ...]


def plan_steps(
    sizes: Mapping[str, int],
    *,
    strategy: Strategy,
    batch_size: int,
    epochs: float,
    seed: int,
    cap: int | None = None,
    temperature: float = 2.0,
    lengths: Mapping[str, Sequence[int]] | None = None,
    group_size: int = 50,
) -> list[Step]:
    """The full, ordered list of training steps of a phase.

    Each step's task is drawn from `task_probabilities`; within a task, examples come from
    successive seeded permutations (each example once per pass over that task), so a task that is
    sampled more often than its size cycles through fresh permutations rather than repeating.
    With `lengths`, batches are grouped by length: `group_size` batches' worth of the permutation
    is sorted by length, cut into batches, and those batches are served in shuffled order, so a
    batch pads to similar lengths (much less wasted compute) while batch order stays random.
    """
    probabilities = task_probabilities(sizes, strategy, cap=cap, temperature=temperature)
    tasks = sorted(probabilities)
    per_epoch = examples_per_epoch(sizes, strategy, cap)
    total_steps = max(1, math.ceil(per_epoch / batch_size * epochs))
    rng = np.random.default_rng(seed)
    if len(tasks) == 1:
        choices: Sequence[str] = [tasks[0]] * total_steps
    else:
        drawn = rng.choice(len(tasks), size=total_steps, p=[probabilities[t] for t in tasks])
        choices = [tasks[int(i)] for i in drawn]
    streams = {
        t: _IndexStream(sizes[t], np.random.default_rng([seed, i])) for i, t in enumerate(tasks)
    }
    if lengths is None:
        return [Step(task, streams[task].take(batch_size)) for task in choices]
    grouped = {
        t: _GroupedBatches(
            streams[t], lengths[t], batch_size, group_size, np.random.default_rng([seed, i, 1])
        )
        for i, t in enumerate(tasks)
    }
    return [Step(task, grouped[task].next()) for task in choices]


class _IndexStream:
    """Endless shuffled passes over range(n); a batch that reaches the end of a pass continues
    into the next permutation, so every batch is full and no example repeats within a pass."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self._n = n
        self._rng = rng
        self._order: list[int] = []

    def take_within_pass(self, count: int) -> list[int]:
        """Up to `count` indices, never crossing into the next permutation."""
        if not self._order:
            self._order = [int(i) for i in self._rng.permutation(self._n)]
        taken = self._order[:count]
        del self._order[:count]
        return taken

    def take(self, count: int) -> tuple[int, ...]:
        taken: list[int] = []
        while len(taken) < count:
            if not self._order:
                self._order = [int(i) for i in self._rng.permutation(self._n)]
            need = count - len(taken)
            taken.extend(self._order[:need])
            del self._order[:need]
        return tuple(taken)


class _GroupedBatches:
    def __init__(
        self,
        stream: _IndexStream,
        lengths: Sequence[int],
        batch_size: int,
        group_size: int,
        rng: np.random.Generator,
    ) -> None:
        self._stream = stream
        self._lengths = lengths
        self._batch_size = batch_size
        self._group_size = group_size
        self._rng = rng
        self._ready: list[tuple[int, ...]] = []

    def next(self) -> tuple[int, ...]:
        if not self._ready:
            pool = self._stream.take_within_pass(self._batch_size * self._group_size)
            short = -len(pool) % self._batch_size
            # Only the last batch of a pass may borrow from the next one, as without grouping.
            pool = sorted([*pool, *self._stream.take(short)], key=lambda i: self._lengths[i])
            batches = [
                tuple(pool[i : i + self._batch_size]) for i in range(0, len(pool), self._batch_size)
            ]
            self._ready = [batches[int(i)] for i in self._rng.permutation(len(batches))]
        return self._ready.pop()


def shard(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank `rank`'s contiguous share of a global batch; shares differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    base, extra = divmod(len(indices), world_size)
    start = rank * base + min(rank, extra)
    return list(indices[start : start + base + (1 if rank < extra else 0)])


def micro_batches(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]
