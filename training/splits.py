"""The leakage guard: no evaluation id is ever seen by a training or selection step, in any language.

Benchmark languages are translations of each other, so an id trained on in English leaks into
every language's evaluation. Slices of the same parallel corpus (same `corpus_key`) must therefore
have disjoint ids, whatever their languages. The guard runs twice: on the recipe (ranges) before
anything loads, and on the ids actually loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from training.recipe import DataSlice, Recipe


class LeakageError(ValueError):
    pass


def _ranges_overlap(a: DataSlice, b: DataSlice) -> bool:
    if a.ids is None or b.ids is None:
        return True
    return a.ids.start < b.ids.stop and b.ids.start < a.ids.stop


def recipe_slices(recipe: Recipe) -> list[tuple[str, DataSlice]]:
    """Every slice a training or selection step reads, named for error messages."""
    named: list[tuple[str, DataSlice]] = []
    for phase_name, phase in (("intermediate", recipe.intermediate), ("target", recipe.target)):
        if phase is None:
            continue
        for task in phase.tasks:
            named.append((f"{phase_name}.{task.task}.train", task.train))
            if task.dev is not None:
                named.append((f"{phase_name}.{task.task}.dev", task.dev))
    return named


def check_recipe(recipe: Recipe, source_lang: str = "en") -> list[str]:
    """Raise on overlapping id ranges; return notes for the manifest (e.g. not zero-shot)."""
    evaluation = recipe.evaluation.data
    notes: list[str] = []
    for name, data in recipe_slices(recipe):
        if data.corpus_key() == evaluation.corpus_key() and _ranges_overlap(data, evaluation):
            mine = data.ids.describe() if data.ids else "all ids"
            theirs = evaluation.ids.describe() if evaluation.ids else "all ids"
            raise LeakageError(
                f"{name} reads ids {mine} of the corpus the evaluation uses ({theirs}):"
                " translations of evaluation items would be trained or selected on; give the two"
                " slices disjoint `ids` ranges"
            )
        if name.endswith(".dev") and set(data.languages) - {source_lang}:
            if not recipe.evaluation.select_on_target_languages:
                raise LeakageError(
                    f"{name} selects checkpoints on {sorted(set(data.languages) - {source_lang})}:"
                    " zero-shot selection uses the source language only; set"
                    " evaluation.select_on_target_languages: true to allow it (results are then"
                    " labelled not zero-shot)"
                )
            notes.append(f"not zero-shot: {name} selects checkpoints on target-language dev data")
    return notes


def check_loaded(
    seen: Mapping[str, Iterable[int]], evaluation_key: str, evaluation_ids: Iterable[int]
) -> None:
    """`seen` maps corpus keys to every id a training or selection step loaded."""
    held_out = set(evaluation_ids)
    overlap = sorted(set(seen.get(evaluation_key, ())) & held_out)
    if overlap:
        raise LeakageError(
            f"{len(overlap)} evaluation ids were loaded for training or selection "
            f"(first: {overlap[:5]}); refusing to evaluate"
        )


def compress_ids(ids: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2,5,7-8": exact and short enough for a manifest."""
    ordered = sorted(set(ids))
    if not ordered:
        return ""
    parts: list[str] = []
    start = previous = ordered[0]
    for value in ordered[1:]:
        if value != previous + 1:
            parts.append(f"{start}-{previous}" if start != previous else str(start))
            start = value
        previous = value
    parts.append(f"{start}-{previous}" if start != previous else str(start))
    return ",".join(parts)
