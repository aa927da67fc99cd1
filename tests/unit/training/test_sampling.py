"""Task mixing probabilities, the seeded step plan, and how a global batch splits across ranks."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from training.sampling import (
    examples_per_epoch,
    micro_batches,
    plan_steps,
    shard,
    task_probabilities,
)

SIZES = {"a": 100, "b": 400, "c": 25}


def test_proportional_probabilities() -> None:
    assert task_probabilities(SIZES, "proportional") == pytest.approx(
        {"a": 100 / 525, "b": 400 / 525, "c": 25 / 525}
    )


def test_capped_probabilities() -> None:
    assert task_probabilities(SIZES, "capped", cap=100) == pytest.approx(
        {"a": 100 / 225, "b": 100 / 225, "c": 25 / 225}
    )
    assert examples_per_epoch(SIZES, "capped", 100) == 225
    assert examples_per_epoch(SIZES, "proportional", None) == 525


def test_temperature_probabilities() -> None:
    # n^(1/2): 10, 20, 5.
    assert task_probabilities(SIZES, "temperature", temperature=2.0) == pytest.approx(
        {"a": 10 / 35, "b": 20 / 35, "c": 5 / 35}
    )
    assert task_probabilities(SIZES, "temperature", temperature=1.0) == pytest.approx(
        task_probabilities(SIZES, "proportional")
    )
    flat = task_probabilities(SIZES, "temperature", temperature=1e6)
    assert all(p == pytest.approx(1 / 3, abs=1e-4) for p in flat.values())


@pytest.mark.parametrize(
    ("sizes", "strategy", "kwargs", "message"),
    [
        ({}, "proportional", {}, "at least one example"),
        ({"a": 3, "b": 0}, "proportional", {}, "at least one example"),
        ({"a": 3}, "capped", {}, "positive cap"),
        ({"a": 3}, "temperature", {"temperature": 0.0}, "temperature must be positive"),
        ({"a": 3}, "uniform", {}, "unknown sampling strategy"),
    ],
)
def test_probability_errors(
    sizes: dict[str, int], strategy: str, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        task_probabilities(sizes, strategy, **kwargs)  # type: ignore[arg-type]


def test_plan_is_a_pure_function_of_its_inputs() -> None:
    args = {"strategy": "temperature", "batch_size": 8, "epochs": 2.0, "temperature": 2.0}
    first = plan_steps(SIZES, seed=3, **args)  # type: ignore[arg-type]
    assert first == plan_steps(dict(reversed(SIZES.items())), seed=3, **args)  # type: ignore[arg-type]
    assert first != plan_steps(SIZES, seed=4, **args)  # type: ignore[arg-type]
    assert len(first) == math.ceil(525 / 8 * 2)
    assert all(len(step.indices) == 8 for step in first)
    assert all(max(step.indices) < SIZES[step.task] for step in first)


def test_plan_task_frequencies_follow_the_probabilities() -> None:
    plan = plan_steps(SIZES, strategy="capped", cap=100, batch_size=1, epochs=40.0, seed=0)
    counts = Counter(step.task for step in plan)
    for task, p in task_probabilities(SIZES, "capped", cap=100).items():
        assert counts[task] / len(plan) == pytest.approx(p, abs=0.02)


def test_each_pass_over_a_task_is_a_permutation() -> None:
    plan = plan_steps({"only": 10}, strategy="proportional", batch_size=4, epochs=2.0, seed=1)
    assert len(plan) == 5
    flat = [i for step in plan for i in step.indices]
    assert sorted(flat[:10]) == list(range(10))
    assert sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]


def test_shard_splits_a_global_batch_contiguously() -> None:
    indices = list(range(10, 20))
    parts = [shard(indices, rank, 3) for rank in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert [i for p in parts for i in p] == indices
    assert shard(indices, 0, 1) == indices
    with pytest.raises(ValueError, match="outside world size"):
        shard(indices, 3, 3)


def test_micro_batches() -> None:
    assert micro_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert micro_batches([], 3) == []
