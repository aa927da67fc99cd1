"""Every recipe shipped in training/recipes validates, names known tasks and passes the guard."""

from __future__ import annotations

import pytest

from training.cli import shipped_recipes
from training.kinds import check_target_task, get_kind
from training.recipe import load_recipe
from training.splits import check_recipe
from training.tasks import get_task

EXPECTED = {
    "pawsx-stilts",
    "pawsx-direct",
    "xnli-direct",
    "multitask-intermediate",
    "pawsx-stilts-multilingual-nli",
    "pawsx-stilts-xlmr-large",
    "xnli-xlmr-large",
}


def test_the_expected_recipes_ship() -> None:
    assert set(shipped_recipes()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_recipe_is_valid(name: str) -> None:
    recipe, _ = load_recipe(shipped_recipes()[name])
    assert recipe.name == name
    check_target_task(recipe.target.tasks[0].task)
    for phase in (recipe.intermediate, recipe.target):
        for task in phase.tasks if phase else ():
            get_kind(get_task(task.task).kind)
    assert check_recipe(recipe) == [], "shipped recipes are zero-shot"


@pytest.mark.parametrize("name", ["pawsx-stilts-xlmr-large", "xnli-xlmr-large"])
def test_paper_scale_settings(name: str) -> None:
    recipe, _ = load_recipe(shipped_recipes()[name])
    assert recipe.base_model == "FacebookAI/xlm-roberta-large"
    phases = [p for p in (recipe.intermediate, recipe.target) if p is not None]
    assert all(p.lr == 1e-5 and p.effective_batch == 32 and p.max_length == 256 for p in phases)
    assert recipe.target.epochs == (5 if name.startswith("pawsx") else 2)


def test_multitask_recipe_mixes_every_family_with_temperature() -> None:
    recipe, _ = load_recipe(shipped_recipes()["multitask-intermediate"])
    assert recipe.intermediate is not None and recipe.intermediate.sampling == "temperature"
    kinds = {get_task(t.task).kind for t in recipe.intermediate.tasks}
    assert kinds == {"classification", "extractive_qa", "multiple_choice"}
