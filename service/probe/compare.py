"""Paired statistics of two models on one plan (the same perturbed inputs). Pure.

Both models see byte-identical samples. A sample one model's tokenizer erases is left out for
both, so every difference is measured on the same (input, sample) pairs; differences are model A
minus model B, with paired bootstrap intervals (inputs resampled, their samples together) and
exact McNemar tests on the first sample of each input, Holm-corrected per test across the cells
of a view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from robustness.stats import holm, mcnemar_exact

from service.probe.assemble import (
    VIEWS,
    CellKey,
    StatsOptions,
    View,
    bootstrap,
    cell_counts,
    cell_samples,
    clean_accuracy,
    evaluation_counts,
    flipped,
    gold_for_all,
    group_inputs,
    group_summary,
    mean_rate,
    model_warnings,
    paired_method,
    perturbed_label,
    plan_warnings,
    rate,
    report_header,
    undefined,
    visible_by_input,
)
from service.probe.language import LanguageDetectorInfo
from service.probe.plan import ProbePlan
from service.probe.schemas import (
    CellViews,
    CompareCell,
    CompareGroup,
    CompareResponse,
    Interval,
    ModelCellStats,
    ModelInfo,
    ModelsTest,
)
from service.probe.scoring import ModelRun

Outcome = Literal["flipped", "changed", "correct"]


def models_test(outcome: Outcome, a: Sequence[bool], b: Sequence[bool]) -> ModelsTest:
    result = mcnemar_exact(np.asarray(a, dtype=bool), np.asarray(b, dtype=bool))
    return ModelsTest(
        outcome=outcome,
        n=result.n,
        a_only=result.a_only,
        b_only=result.b_only,
        p_value=result.p_value,
        p_holm=None,
        note=result.note,
    )


def untested(outcome: Outcome, n: int, note: str) -> ModelsTest:
    return ModelsTest(
        outcome=outcome, n=n, a_only=0, b_only=0, p_value=None, p_holm=None, note=note
    )


def apply_holm(tests: Sequence[ModelsTest | None]) -> None:
    """Fill in p_holm over the tests that have a p-value (Holm: any dependence between them)."""
    tested = [t for t in tests if t is not None and t.p_value is not None]
    adjusted = holm([t.p_value for t in tested if t.p_value is not None]).adjusted
    for test, p in zip(tested, adjusted, strict=True):
        test.p_holm = p


def _means(values: Sequence[Sequence[bool]]) -> list[float]:
    return [float(np.mean(v)) for v in values]


def compare_cell(
    plan: ProbePlan,
    a: ModelRun,
    b: ModelRun,
    key: CellKey,
    sample_ids: Sequence[int],
    opts: StatsOptions,
) -> CompareCell:
    spec = plan.specs[key[0]]
    visible = visible_by_input(plan, sample_ids, [a.noop, b.noop])
    inputs = list(visible)
    groups = list(visible.values())
    several = any(len(g) > 1 for g in groups)
    flips = {
        name: [[flipped(run, plan, s) for s in g] for g in groups]
        for name, run in (("a", a), ("b", b))
    }
    outcome: Outcome = "changed" if spec.directional else "flipped"
    counts = cell_counts(
        spec,
        key[1],
        len(inputs),
        sum(len(g) for g in groups),
        sum(a.noop[s] and b.noop[s] for s in sample_ids),
    )
    flip_difference = bootstrap(
        np.subtract(_means(flips["a"]), _means(flips["b"])).tolist(), opts, paired_method(several)
    )
    flip_test = (
        models_test(outcome, [f[0] for f in flips["a"]], [f[0] for f in flips["b"]])
        if groups
        else untested(outcome, 0, "no inputs both models saw perturbed")
    )
    cell = CompareCell(
        **counts,
        n_noop_one_model=sum(a.noop[s] != b.noop[s] for s in sample_ids),
        a=ModelCellStats(flip_rate=rate(flips["a"], several, opts)),
        b=ModelCellStats(flip_rate=rate(flips["b"], several, opts)),
        flip_rate_difference=flip_difference,
        flip_test=flip_test,
    )
    if not spec.directional:
        _add_accuracies(cell, plan, a, b, visible, several, opts)
    return cell


def _add_accuracies(
    cell: CompareCell,
    plan: ProbePlan,
    a: ModelRun,
    b: ModelRun,
    visible: dict[int, list[int]],
    several: bool,
    opts: StatsOptions,
) -> None:
    """Accuracy of both models on the cell's paired samples, and its differences (gold only)."""
    inputs = list(visible)
    if not gold_for_all(plan, inputs):
        note = "no inputs" if not inputs else "gold labels missing for some inputs"
        missing = undefined(len(inputs), "paired percentile bootstrap", note)
        for stats in (cell.a, cell.b):
            stats.clean_accuracy = stats.perturbed_accuracy = stats.accuracy_change = missing
        cell.perturbed_accuracy_difference = cell.accuracy_change_difference = missing
        cell.perturbed_accuracy_test = untested("correct", len(inputs), note)
        return
    clean: dict[str, list[float]] = {}
    perturbed: dict[str, list[float]] = {}
    first: dict[str, list[bool]] = {}
    for name, run, stats in (("a", a, cell.a), ("b", b, cell.b)):
        correct = [
            [perturbed_label(run, plan, s) == plan.inputs[i].gold for s in samples]
            for i, samples in visible.items()
        ]
        clean[name] = [float(run.clean[i].label == plan.inputs[i].gold) for i in inputs]
        perturbed[name] = _means(correct)
        first[name] = [c[0] for c in correct]
        stats.clean_accuracy = clean_accuracy(plan, run, inputs, opts)
        stats.perturbed_accuracy = mean_rate(perturbed[name], several, opts)
        stats.accuracy_change = bootstrap(
            np.subtract(perturbed[name], clean[name]).tolist(), opts, paired_method(several)
        )
    change = {n: np.subtract(perturbed[n], clean[n]) for n in ("a", "b")}
    method = paired_method(several)
    cell.perturbed_accuracy_difference = bootstrap(
        np.subtract(perturbed["a"], perturbed["b"]).tolist(), opts, method
    )
    cell.accuracy_change_difference = bootstrap((change["a"] - change["b"]).tolist(), opts, method)
    cell.perturbed_accuracy_test = models_test("correct", first["a"], first["b"])


def compare_cells(
    plan: ProbePlan, a: ModelRun, b: ModelRun, view: View, *, directional: bool, opts: StatsOptions
) -> list[CompareCell]:
    cells = [
        compare_cell(plan, a, b, key, ids, opts)
        for key, ids in cell_samples(plan, view, directional=directional).items()
    ]
    apply_holm([c.flip_test for c in cells])
    apply_holm([c.perturbed_accuracy_test for c in cells])
    return cells


def compare_group(
    plan: ProbePlan, a: ModelRun, b: ModelRun, group: str, inputs: Sequence[int], opts: StatsOptions
) -> CompareGroup:
    """Clean behaviour of both models on one language or script, and their accuracy difference."""
    difference: Interval
    if gold_for_all(plan, inputs):
        correct = {
            name: [run.clean[i].label == plan.inputs[i].gold for i in inputs]
            for name, run in (("a", a), ("b", b))
        }
        difference = bootstrap(
            np.subtract(correct["a"], correct["b"], dtype=np.float64).tolist(),
            opts,
            "paired percentile bootstrap",
        )
        test = models_test("correct", correct["a"], correct["b"])
    else:
        note = "gold labels missing for some inputs"
        difference = undefined(len(inputs), "paired percentile bootstrap", note)
        test = untested("correct", len(inputs), note)
    return CompareGroup(
        group=group,
        n_inputs=len(inputs),
        a=group_summary(plan, a, group, inputs, opts),
        b=group_summary(plan, b, group, inputs, opts),
        clean_accuracy_difference=difference,
        clean_accuracy_test=test,
    )


def assemble_compare(
    plan: ProbePlan,
    runs: tuple[ModelRun, ModelRun],
    models: tuple[ModelInfo, ModelInfo],
    opts: StatsOptions,
    detector: LanguageDetectorInfo,
) -> CompareResponse:
    """The whole comparison report; `timing` is left for the caller to fill in."""
    a, b = runs
    groups = {}
    for view in VIEWS:
        groups[view] = [
            compare_group(plan, a, b, g, ids, opts) for g, ids in group_inputs(plan, view).items()
        ]
        apply_holm([g.clean_accuracy_test for g in groups[view]])
    warnings = plan_warnings(plan, detector)
    for name, run, info in (("a", a, models[0]), ("b", b, models[1])):
        summaries = [getattr(g, name) for g in groups["lang"]]
        warnings += model_warnings(plan, run, summaries, prefix=f"model_{name} ({info.name}): ")

    def views(directional: bool) -> CellViews[CompareCell]:
        return CellViews[CompareCell](
            by_language=compare_cells(plan, a, b, "lang", directional=directional, opts=opts),
            by_script=compare_cells(plan, a, b, "script", directional=directional, opts=opts),
        )

    return CompareResponse(
        **report_header(plan, opts, detector),
        warnings=warnings,
        model_a=models[0],
        model_b=models[1],
        evaluations={"a": evaluation_counts(plan, a), "b": evaluation_counts(plan, b)},
        languages=groups["lang"],
        scripts=groups["script"],
        invariance=views(directional=False),
        directional=views(directional=True),
    )
