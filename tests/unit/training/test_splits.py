"""The leakage guard: parallel ids are one item in every language."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from training.recipe import recipe_from_mapping
from training.splits import LeakageError, check_loaded, check_recipe, compress_ids

EVAL = {"path": "/d/pawsx", "languages": ["en", "de", "fr"], "ids": {"start": 10, "stop": 16}}


def _recipe(train: dict[str, Any], dev: dict[str, Any] | None = None, **extra: Any) -> Any:
    task: dict[str, Any] = {"task": "pawsx", "train": train}
    raw: dict[str, Any] = {
        "name": "t",
        "base_model": "m",
        "output_dir": "o",
        "target": {"tasks": [task], "selection": "best_dev" if dev else "last"},
        "evaluation": {"data": copy.deepcopy(EVAL), **extra.pop("evaluation", {})},
        **extra,
    }
    if dev is not None:
        task["dev"] = dev
    return recipe_from_mapping(raw)


def _slice(start: int, stop: int, *languages: str, path: str = "/d/pawsx") -> dict[str, Any]:
    return {
        "path": path,
        "languages": list(languages or ("en",)),
        "ids": {"start": start, "stop": stop},
    }


def test_disjoint_ids_pass_and_are_zero_shot() -> None:
    assert check_recipe(_recipe(_slice(0, 8), _slice(8, 10))) == []


@pytest.mark.parametrize("lang", ["en", "de", "ja"])
def test_overlap_in_any_language_raises(lang: str) -> None:
    # ja is not even evaluated: its id 12 is still a translation of the evaluated items 12.
    with pytest.raises(LeakageError, match=r"target.pawsx.train reads ids 0-12 .* \(10-15\)"):
        check_recipe(_recipe(_slice(0, 13, lang)))


def test_overlap_through_a_single_file_path_and_unbounded_ids() -> None:
    with pytest.raises(LeakageError, match=r"target\.pawsx\.dev reads ids 15-19"):
        check_recipe(_recipe(_slice(0, 8), _slice(15, 20, path="/d/pawsx/en.jsonl")))
    with pytest.raises(LeakageError, match="reads ids all ids"):
        check_recipe(_recipe({"path": "/d/pawsx", "languages": ["en"]}))


def test_intermediate_slices_are_guarded_too() -> None:
    phase = {"tasks": [{"task": "pawsx", "train": _slice(12, 14)}], "selection": "last"}
    with pytest.raises(LeakageError, match=r"intermediate\.pawsx\.train"):
        check_recipe(_recipe(_slice(0, 8), intermediate=phase))
    other_corpus = {
        "tasks": [{"task": "xnli", "train": {"path": "/d/xnli/train"}}],
        "selection": "last",
    }
    assert check_recipe(_recipe(_slice(0, 8), intermediate=other_corpus)) == []


def test_target_language_dev_needs_the_flag_and_is_labelled() -> None:
    dev = _slice(8, 10, "en", "de")
    with pytest.raises(
        LeakageError, match=r"selects checkpoints on \['de'\].*select_on_target_languages"
    ):
        check_recipe(_recipe(_slice(0, 8), dev))
    notes = check_recipe(
        _recipe(_slice(0, 8), dev, evaluation={"select_on_target_languages": True})
    )
    assert notes == [
        "not zero-shot: target.pawsx.dev selects checkpoints on target-language dev data"
    ]


def test_check_loaded() -> None:
    key = "local:/d/pawsx"
    check_loaded({key: [0, 1, 2], "local:/d/xnli": [10, 11]}, key, [10, 11])
    with pytest.raises(LeakageError, match=r"2 evaluation ids were loaded .*\(first: \[10, 11\]\)"):
        check_loaded({key: [0, 10, 11]}, key, range(10, 16))


def test_compress_ids() -> None:
    assert compress_ids([5, 0, 1, 2, 7, 8, 2]) == "0-2,5,7-8"
    assert compress_ids([]) == ""
    assert compress_ids([3]) == "3"
