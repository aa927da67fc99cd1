"""Recipe validation gives messages that name the key and say what to change; overrides."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from training.recipe import RecipeError, apply_overrides, load_recipe, recipe_from_mapping

BASE: dict[str, Any] = {
    "name": "t",
    "base_model": "some/model",
    "output_dir": "out",
    "target": {
        "tasks": [
            {
                "task": "pawsx",
                "train": {"path": "pawsx", "ids": {"start": 0, "stop": 8}},
                "dev": {"path": "pawsx", "ids": {"start": 8, "stop": 10}},
            }
        ]
    },
    "evaluation": {
        "data": {"path": "pawsx", "languages": ["en", "de"], "ids": {"start": 10, "stop": 16}}
    },
}


def _with(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    node: Any = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[parts[-1]] = value
    return raw


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(RecipeError) as caught:
        recipe_from_mapping(raw, source="r.yaml")
    return str(caught.value)


def test_valid_recipe() -> None:
    recipe = recipe_from_mapping(BASE)
    assert not recipe.is_stilts and recipe.target.tasks[0].train.ids is not None
    assert recipe.target.tasks[0].train.ids.describe() == "0-7"


def test_unknown_keys_are_named() -> None:
    message = _error(_with("target.learning_rate", 1e-5))
    assert "r.yaml: 1 problem(s)" in message
    assert "target.learning_rate: unknown key: remove it or check its spelling" in message
    assert "unknown key" in _error(_with("target.tasks.0.train.langs", ["en"]))


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("target.lr", -1.0, "target.lr: Input should be greater than 0"),
        ("target.max_length", 4, "target.max_length: Input should be greater than or equal to 8"),
        ("target.warmup_ratio", 1.0, "target.warmup_ratio: Input should be less than 1"),
        (
            "target.tasks.0.train.ids",
            {"start": 5, "stop": 5},
            "stop (5) must be greater than start (5)",
        ),
        ("seeds", [], "seeds: Tuple should have at least 1 item"),
        ("name", "bad name!", "name: String should match pattern"),
    ],
)
def test_bad_ranges(path: str, value: Any, expected: str) -> None:
    assert expected in _error(_with(path, value))


def test_consistency_rules() -> None:
    assert "sampling 'capped' needs sampling_cap" in _error(_with("target.sampling", "capped"))
    no_dev = _with("target.tasks.0.dev", None)
    assert (
        "selection 'best_dev' needs a dev slice for every task (missing for ['pawsx'])"
        in _error(no_dev)
    )
    assert "patience (early stopping) needs selection: best_dev" in _error(
        {**no_dev, "target": {**no_dev["target"], "selection": "last", "patience": 2}}
    )
    both = _with("target.tasks.0.train.hub", "paws-x")
    assert "give exactly one of `path` (local JSONL) or `hub`" in _error(both)
    two = _with("target.tasks", [BASE["target"]["tasks"][0]] * 2)
    assert "the target phase trains exactly one task" in _error(two)


def test_overrides_address_nested_keys_and_list_items() -> None:
    raw = apply_overrides(
        BASE, ["target.lr=2e-5", "target.tasks.0.train.ids.stop=6", "seeds=[1, 2]"]
    )
    assert raw["target"]["tasks"][0]["train"]["ids"]["stop"] == 6
    # PyYAML reads "2e-5" (no dot) as a string; validation coerces it to the float.
    recipe = recipe_from_mapping(raw)
    assert recipe.target.lr == 2e-5 and recipe.seeds == (1, 2)
    assert apply_overrides(BASE, ["intermediate.epochs=1"])["intermediate"] == {"epochs": 1}
    assert BASE["target"]["tasks"][0]["train"]["ids"]["stop"] == 8


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("target.lr", "is not KEY=VALUE"),
        ("=3", "is not KEY=VALUE"),
        ("target.tasks.1.task=x", "'1' is not an index below 1"),
        ("target.tasks.first.task=x", "'first' is not an index below 1"),
        ("name.sub=1", "name is not a section"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        apply_overrides(BASE, [override])


def test_load_yaml_and_toml_resolve_paths_against_data_root(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**BASE, "data_root": "/data"}))
    recipe, resolved = load_recipe(tmp_path / "r.yaml", ["target.epochs=1"])
    assert recipe.target.tasks[0].train.path == Path("/data/pawsx")
    assert resolved["target"]["epochs"] == 1
    toml = (
        'name = "t"\nbase_model = "m"\noutput_dir = "o"\n'
        '[target]\n[[target.tasks]]\ntask = "sst2"\ntrain = {path = "x.jsonl"}\n'
        '[target.tasks.dev]\npath = "y.jsonl"\n'
        '[evaluation.data]\npath = "z.jsonl"\n'
    )
    (tmp_path / "r.toml").write_text(toml)
    recipe, _ = load_recipe(tmp_path / "r.toml")
    assert recipe.target.tasks[0].task == "sst2"
    with pytest.raises(RecipeError, match="learning_rate: unknown key"):
        load_recipe(tmp_path / "r.toml", ["target.learning_rate=1"])
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(RecipeError, match=r"a recipe is a \.yaml, \.yml or \.toml file"):
        load_recipe(tmp_path / "r.json")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping of sections, got list"):
        load_recipe(tmp_path / "list.yaml")


def test_pipeline_refuses_a_non_classification_target(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from training.pipeline import run_recipe
    from training.tasks import TaskError

    raw = _with("target.tasks.0.task", "squad")
    raw["output_dir"] = str(tmp_path / "out")
    with pytest.raises(TaskError, match="target task 'squad' has kind 'extractive_qa'"):
        run_recipe(recipe_from_mapping(raw), raw, recipe_text="")
    assert not (tmp_path / "out").exists()
