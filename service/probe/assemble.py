"""Robustness statistics of one model on one plan, shaped as the response reports them. Pure.

A flip rate alone misleads: a model that predicts one class for everything never flips. So every
cell carries clean accuracy and the clean prediction distribution (with a warning when one label
dominates) beside the flip rate, and every rate carries an interval. No-op samples are counted
but left out of every rate; inputs a family cannot handle are skipped and listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from robustness import RNG_SCHEME
from robustness.stats import (
    CellSummary,
    Estimate,
    ProbeOutcome,
    accuracy,
    aggregate,
    any_flip_rate,
    bootstrap_mean,
    clustered_flip_rate,
    flip_rate,
    signed_margin,
)

from service.probe.language import LanguageDetectorInfo
from service.probe.plan import PreparedInput, ProbePlan, ProbeSpec
from service.probe.schemas import (
    CellCounts,
    CellViews,
    CleanVsPerturbedTest,
    DirectionalCell,
    EvaluationCounts,
    ExampleOut,
    GroupSummary,
    Interval,
    LabelProbability,
    LanguageDetection,
    ModelInfo,
    PerturbationInfo,
    PredictionDistribution,
    ProbeResponse,
    RobustnessCell,
    Skipped,
    TextPairOut,
    Timing,
)
from service.probe.scoring import ModelRun, Scored

# Above this share of one label, flip rates say more about the model's bias than its robustness.
DOMINANT_SHARE = 0.9
# Below this many predictions one label "dominating" is too often chance to warn about (four
# inputs of a balanced task all get one label one time in eight).
DOMINANCE_MIN_N = 10
# Above this share of no-op samples, a family mostly tests the tokenizer, not the model.
NOOP_WARNING_SHARE = 0.5

View = Literal["lang", "script"]
VIEWS: tuple[View, ...] = ("lang", "script")
CellKey = tuple[int, str]  # (spec index, language or script)


@dataclass(frozen=True)
class StatsOptions:
    confidence: float
    n_resamples: int
    seed: int  # the probe's seed also seeds every bootstrap, so a repeat is byte-identical
    max_examples: int


def group_of(item: PreparedInput, view: View) -> str:
    return item.lang if view == "lang" else item.script


def interval(estimate: Estimate) -> Interval:
    return Interval(
        estimate=estimate.estimate,
        ci_low=estimate.ci_low,
        ci_high=estimate.ci_high,
        n=estimate.n,
        method=estimate.method,
        note=estimate.note,
    )


def undefined(n: int, method: str, note: str) -> Interval:
    return Interval(estimate=None, ci_low=None, ci_high=None, n=n, method=method, note=note)


def bootstrap(values: Sequence[float], opts: StatsOptions, method: str) -> Interval:
    return interval(
        bootstrap_mean(
            np.asarray(values, dtype=np.float64),
            n_resamples=opts.n_resamples,
            seed=opts.seed,
            confidence=opts.confidence,
            method=method,
        )
    )


def paired_method(several: bool) -> str:
    return (
        "paired cluster bootstrap (inputs resampled)" if several else "paired percentile bootstrap"
    )


def rate(flips: Sequence[Sequence[bool]], several: bool, opts: StatsOptions) -> Interval:
    """Flip (or change) rate: Wilson with one sample per input, cluster bootstrap with several."""
    if several:
        return interval(
            clustered_flip_rate(
                flips, n_resamples=opts.n_resamples, seed=opts.seed, confidence=opts.confidence
            )
        )
    return interval(flip_rate([f[0] for f in flips], opts.confidence))


def mean_rate(per_input: Sequence[float], several: bool, opts: StatsOptions) -> Interval:
    """Accuracy over inputs whose value is a share of correct samples (Wilson when 0/1)."""
    if several:
        return bootstrap(per_input, opts, "cluster bootstrap (inputs resampled)")
    return interval(accuracy(np.asarray(per_input, dtype=bool), opts.confidence))


def distribution(
    labels: Sequence[str], predicted: Sequence[str], *, what: str | None = None
) -> PredictionDistribution:
    """Predictions per label; with `what` set, a warning when one label dominates."""
    counts = dict.fromkeys(labels, 0)
    for label in predicted:
        counts[label] += 1
    n = len(predicted)
    if n == 0:
        return PredictionDistribution(n=0, counts=counts, dominant_label=None, dominant_share=None)
    top = max(labels, key=lambda label: counts[label])  # ties: the first in label order
    share = counts[top] / n
    warning = None
    if what is not None and share > DOMINANT_SHARE and n >= DOMINANCE_MIN_N:
        warning = (
            f"{share:.1%} of {what} are {top!r} (n={n}): a model that predicts one class is "
            "trivially robust; read flip rates beside clean accuracy"
        )
    return PredictionDistribution(
        n=n, counts=counts, dominant_label=top, dominant_share=share, warning=warning
    )


def cell_samples(plan: ProbePlan, view: View, *, directional: bool) -> dict[CellKey, list[int]]:
    """Sample indices per (spec, group), skipped samples left out; spec order, then group."""
    cells: dict[CellKey, list[int]] = defaultdict(list)
    for index, sample in enumerate(plan.samples):
        if sample.skipped is None and plan.specs[sample.spec].directional == directional:
            cells[(sample.spec, group_of(plan.inputs[sample.input], view))].append(index)
    return dict(sorted(cells.items()))


def visible_by_input(
    plan: ProbePlan, sample_ids: Sequence[int], noops: Sequence[Sequence[bool]]
) -> dict[int, list[int]]:
    """Input -> its samples that no model in `noops` saw as a no-op, inputs with none left out."""
    grouped: dict[int, list[int]] = defaultdict(list)
    for index in sample_ids:
        if not any(noop[index] for noop in noops):
            grouped[plan.samples[index].input].append(index)
    return dict(grouped)


def perturbed_label(run: ModelRun, plan: ProbePlan, sample: int) -> str:
    scored = run.perturbed[sample]
    return run.clean[plan.samples[sample].input].label if scored is None else scored.label


def flipped(run: ModelRun, plan: ProbePlan, sample: int) -> bool:
    return perturbed_label(run, plan, sample) != run.clean[plan.samples[sample].input].label


def gold_for_all(plan: ProbePlan, inputs: Sequence[int]) -> bool:
    return bool(inputs) and all(plan.inputs[i].gold is not None for i in inputs)


def clean_accuracy(
    plan: ProbePlan, run: ModelRun, inputs: Sequence[int], opts: StatsOptions
) -> Interval:
    golds = [plan.inputs[i].gold for i in inputs]
    known = sum(g is not None for g in golds)
    if not inputs or known < len(inputs):
        note = "no inputs" if not inputs else f"gold labels given for {known} of {len(inputs)}"
        return undefined(len(inputs), "wilson", note)
    correct = [run.clean[i].label == gold for i, gold in zip(inputs, golds, strict=True)]
    return interval(accuracy(correct, opts.confidence))


def group_inputs(plan: ProbePlan, view: View) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for item in plan.inputs:
        groups[group_of(item, view)].append(item.index)
    return dict(sorted(groups.items()))


def group_summary(
    plan: ProbePlan, run: ModelRun, group: str, inputs: Sequence[int], opts: StatsOptions
) -> GroupSummary:
    return GroupSummary(
        group=group,
        n_inputs=len(inputs),
        n_lang_detected=sum(plan.inputs[i].lang_detected for i in inputs),
        clean_accuracy=clean_accuracy(plan, run, inputs, opts),
        clean_predictions=distribution(
            run.labels, [run.clean[i].label for i in inputs], what="clean predictions"
        ),
    )


def example(plan: ProbePlan, run: ModelRun, sample_id: int) -> ExampleOut:
    sample = plan.samples[sample_id]
    item = plan.inputs[sample.input]
    clean = run.clean[sample.input]
    perturbed = run.perturbed[sample_id]
    assert perturbed is not None  # examples are drawn from samples the model saw
    return ExampleOut(
        input_index=item.index,
        id=item.id,
        sample_index=sample.sample_index,
        gold=item.gold,
        original=TextPairOut(text=item.text, text_pair=item.text_pair),
        perturbed=TextPairOut(text=sample.text, text_pair=sample.text_pair),
        clean_prediction=_top(run, clean),
        perturbed_prediction=_top(run, perturbed),
    )


def _top(run: ModelRun, scored: Scored) -> LabelProbability:
    return LabelProbability(
        label=scored.label, probability=scored.probabilities[run.label_index(scored.label)]
    )


def flipped_examples(
    plan: ProbePlan, run: ModelRun, visible: dict[int, list[int]], limit: int
) -> list[ExampleOut]:
    chosen = [s for samples in visible.values() for s in samples if flipped(run, plan, s)]
    return [example(plan, run, s) for s in chosen[:limit]]


def _spec_key(spec: int) -> str:
    # The library groups by a "family" string; the spec index keeps severity sweeps apart and
    # sorts in request order.
    return f"{spec:06d}"


def _outcome(plan: ProbePlan, run: ModelRun, sample_id: int, view: View) -> ProbeOutcome:
    sample = plan.samples[sample_id]
    item = plan.inputs[sample.input]
    clean = run.clean[sample.input].label
    perturbed = perturbed_label(run, plan, sample_id)
    return ProbeOutcome(
        example_id=str(sample.input),
        family=_spec_key(sample.spec),
        lang=item.lang,
        script=item.script,
        sample_index=sample.sample_index,
        flipped=perturbed != clean,
        noop=run.noop[sample_id],
        clean_correct=None if item.gold is None else clean == item.gold,
        perturbed_correct=None if item.gold is None else perturbed == item.gold,
    )


def _drops(
    plan: ProbePlan, run: ModelRun, visible: dict[int, list[int]], reference_is_gold: bool
) -> tuple[list[float], list[float]]:
    """Per input: mean drop of the reference label's probability and of its signed margin."""
    confidence_drops: list[float] = []
    margin_drops: list[float] = []
    for input_index, samples in visible.items():
        clean = run.clean[input_index]
        gold = plan.inputs[input_index].gold
        ref = run.label_index(gold if reference_is_gold and gold is not None else clean.label)
        before = np.array([clean.probabilities] * len(samples))
        after = np.array([_seen(run, s).probabilities for s in samples])
        refs = np.full(len(samples), ref)
        confidence_drops.append(float(np.mean(before[:, ref] - after[:, ref])))
        margin_drops.append(
            float(np.mean(signed_margin(before, refs) - signed_margin(after, refs)))
        )
    return confidence_drops, margin_drops


def _seen(run: ModelRun, sample: int) -> Scored:
    scored = run.perturbed[sample]
    assert scored is not None  # only samples the model saw reach here
    return scored


def robustness_cell(
    plan: ProbePlan,
    run: ModelRun,
    key: CellKey,
    sample_ids: Sequence[int],
    summary: CellSummary,
    opts: StatsOptions,
) -> RobustnessCell:
    spec = plan.specs[key[0]]
    visible = visible_by_input(plan, sample_ids, [run.noop])
    inputs = list(visible)
    several = any(len(s) > 1 for s in visible.values())
    reference_is_gold = gold_for_all(plan, inputs)
    confidence_drops, margin_drops = _drops(plan, run, visible, reference_is_gold)
    return RobustnessCell(
        **cell_counts(spec, key[1], summary.n_inputs, summary.n_samples, summary.n_noop),
        clean_predictions=distribution(
            run.labels, [run.clean[i].label for i in inputs], what="clean predictions"
        ),
        clean_accuracy=interval(summary.clean_accuracy),
        perturbed_accuracy=interval(summary.perturbed_accuracy),
        accuracy_change=interval(summary.accuracy_change),
        flip_rate=interval(summary.flip_rate),
        any_flip_rate=interval(summary.any_flip_rate),
        drop_reference="gold" if reference_is_gold else "clean_prediction",
        confidence_drop=bootstrap(confidence_drops, opts, paired_method(several)),
        margin_drop=bootstrap(margin_drops, opts, paired_method(several)),
        mcnemar=CleanVsPerturbedTest(
            n=summary.mcnemar.n,
            clean_only_correct=summary.mcnemar.a_only,
            perturbed_only_correct=summary.mcnemar.b_only,
            p_value=summary.mcnemar.p_value,
            p_holm=summary.p_adjusted,
            note=summary.mcnemar.note,
        ),
        flipped_examples=flipped_examples(plan, run, visible, opts.max_examples),
    )


def cell_counts(
    spec: ProbeSpec, group: str, n_inputs: int, n_samples: int, n_noop: int
) -> dict[str, Any]:
    """The fields every cell starts with (CellCounts), as keyword arguments."""
    return CellCounts(
        perturbation=spec.index,
        family=spec.family.name,
        severity=spec.severity,
        group=group,
        n_inputs=n_inputs,
        n_samples=n_samples,
        n_noop=n_noop,
    ).model_dump()


def robustness_cells(
    plan: ProbePlan, run: ModelRun, view: View, opts: StatsOptions
) -> list[RobustnessCell]:
    """Invariance cells of one view; McNemar p-values Holm-corrected across them."""
    cells = cell_samples(plan, view, directional=False)
    outcomes = [_outcome(plan, run, s, view) for ids in cells.values() for s in ids]
    summaries = aggregate(
        outcomes,
        by=("family", view),
        n_resamples=opts.n_resamples,
        seed=opts.seed,
        confidence=opts.confidence,
        correction="holm",
    )
    return [
        robustness_cell(plan, run, key, ids, summaries[(_spec_key(key[0]), key[1])], opts)
        for key, ids in cells.items()
    ]


def reference_label(plan: ProbePlan, run: ModelRun, input_index: int, use_gold: bool) -> str:
    gold = plan.inputs[input_index].gold
    return gold if use_gold and gold is not None else run.clean[input_index].label


def directional_cell(
    plan: ProbePlan, run: ModelRun, key: CellKey, sample_ids: Sequence[int], opts: StatsOptions
) -> DirectionalCell:
    """A family expected to change the label: how often the prediction does change."""
    spec = plan.specs[key[0]]
    visible = visible_by_input(plan, sample_ids, [run.noop])
    inputs = list(visible)
    changes = {i: [flipped(run, plan, s) for s in samples] for i, samples in visible.items()}
    several = any(len(c) > 1 for c in changes.values())
    use_gold = gold_for_all(plan, inputs)
    by_reference: dict[str, list[list[bool]]] = defaultdict(list)
    for input_index, flags in changes.items():
        by_reference[reference_label(plan, run, input_index, use_gold)].append(flags)
    seen = [s for samples in visible.values() for s in samples]
    chosen = [s for s in seen if flipped(run, plan, s)][: opts.max_examples]
    return DirectionalCell(
        **cell_counts(spec, key[1], len(inputs), len(seen), sum(run.noop[s] for s in sample_ids)),
        clean_predictions=distribution(run.labels, [run.clean[i].label for i in inputs]),
        perturbed_predictions=distribution(run.labels, [_seen(run, s).label for s in seen]),
        change_rate=rate(list(changes.values()), several, opts),
        any_change_rate=interval(any_flip_rate(list(changes.values()), opts.confidence)),
        reference="gold" if use_gold else "clean_prediction",
        change_rate_by_reference={
            label: rate(by_reference[label], several, opts)
            for label in run.labels
            if label in by_reference
        },
        changed_examples=[example(plan, run, s) for s in chosen],
    )


def directional_cells(
    plan: ProbePlan, run: ModelRun, view: View, opts: StatsOptions
) -> list[DirectionalCell]:
    cells = cell_samples(plan, view, directional=True)
    return [directional_cell(plan, run, key, ids, opts) for key, ids in cells.items()]


def perturbation_info(spec: ProbeSpec) -> PerturbationInfo:
    return PerturbationInfo(
        index=spec.index,
        family=spec.family.name,
        spec_version=spec.family.spec_version,
        severity=spec.severity,
        samples=spec.samples,
        target=spec.target,
        kind="directional" if spec.directional else "invariance",
        description=spec.family.description,
        note=(
            "label-preserving only for symmetric tasks (paraphrase); for NLI, where premise "
            "and hypothesis play different roles, read its flips as directional"
            if spec.family.symmetric_task_only
            else None
        ),
    )


def skipped_inputs(plan: ProbePlan) -> list[Skipped]:
    """Per (spec, language): inputs the family could not handle, with the library's reason."""
    inputs: dict[tuple[int, str], set[int]] = defaultdict(set)
    reasons: dict[tuple[int, str], str] = {}
    for sample in plan.samples:
        if sample.skipped is not None:
            key = (sample.spec, plan.inputs[sample.input].lang)
            inputs[key].add(sample.input)
            reasons.setdefault(key, sample.skipped)
    return [
        Skipped(
            perturbation=spec,
            family=plan.specs[spec].family.name,
            lang=lang,
            n_inputs=len(inputs[(spec, lang)]),
            reason=reasons[(spec, lang)],
        )
        for spec, lang in sorted(inputs)
    ]


def plan_warnings(plan: ProbePlan, detector: LanguageDetectorInfo) -> list[str]:
    """Warnings that hold whatever the model: detection, skipped families, partial labels."""
    warnings = []
    detected = sum(item.lang_detected for item in plan.inputs)
    if detected:
        warnings.append(
            f"the language of {detected} input(s) was detected ({detector.method}, choosing "
            f"among {', '.join(detector.languages)}); send lang to be sure"
        )
    for spec in plan.specs:
        spec_samples = [s for s in plan.samples if s.spec == spec.index]
        if spec_samples and all(s.skipped is not None for s in spec_samples):
            warnings.append(
                f"perturbations[{spec.index}] ({spec.family.name}) supports none of the "
                f"inputs' languages or scripts: nothing measured (see skipped)"
            )
    labelled = sum(item.gold is not None for item in plan.inputs)
    if 0 < labelled < len(plan.inputs):
        warnings.append(
            f"gold labels given for {labelled} of {len(plan.inputs)} inputs: accuracies are "
            "reported only where every input of a cell has one"
        )
    return warnings


def model_warnings(
    plan: ProbePlan, run: ModelRun, languages: Sequence[GroupSummary], prefix: str = ""
) -> list[str]:
    """Warnings about this model: a dominant clean label, families that are mostly no-ops."""
    warnings = [
        f"{prefix}lang {g.group}: {g.clean_predictions.warning}"
        for g in languages
        if g.clean_predictions.warning
    ]
    for spec in plan.specs:
        ids = [i for i, s in enumerate(plan.samples) if s.spec == spec.index and s.skipped is None]
        noops = sum(run.noop[i] for i in ids)
        if ids and noops / len(ids) > NOOP_WARNING_SHARE:
            warnings.append(
                f"{prefix}perturbations[{spec.index}] ({spec.family.name}): {noops} of "
                f"{len(ids)} samples are no-ops for this model's tokenizer (it normalises the "
                "edit away); its rates rest on the rest"
            )
    return warnings


def evaluation_counts(plan: ProbePlan, run: ModelRun) -> EvaluationCounts:
    skipped = sum(s.skipped is not None for s in plan.samples)
    return EvaluationCounts(
        clean=len(plan.inputs),
        perturbed=sum(p is not None for p in run.perturbed),
        noop=sum(run.noop),
        skipped=skipped,
    )


def report_header(
    plan: ProbePlan, opts: StatsOptions, detector: LanguageDetectorInfo
) -> dict[str, Any]:
    """The fields both endpoints share: what it takes to repeat the probe, and its caveats."""
    return {
        "seed": plan.seed,
        "rng_scheme": RNG_SCHEME,
        "confidence": opts.confidence,
        "bootstrap_resamples": opts.n_resamples,
        "perturbations": [perturbation_info(spec) for spec in plan.specs],
        "language_detection": LanguageDetection(
            method=detector.method,
            languages=list(detector.languages),
            n_detected=sum(item.lang_detected for item in plan.inputs),
        ),
        "skipped": skipped_inputs(plan),
        "timing": Timing(duration_s=0.0),
    }


def assemble_probe(
    plan: ProbePlan,
    run: ModelRun,
    model: ModelInfo,
    opts: StatsOptions,
    detector: LanguageDetectorInfo,
) -> ProbeResponse:
    """The whole single-model report; `timing` is left for the caller to fill in."""
    summaries = {
        view: [
            group_summary(plan, run, g, ids, opts) for g, ids in group_inputs(plan, view).items()
        ]
        for view in VIEWS
    }
    return ProbeResponse(
        **report_header(plan, opts, detector),
        warnings=plan_warnings(plan, detector) + model_warnings(plan, run, summaries["lang"]),
        model=model,
        evaluations=evaluation_counts(plan, run),
        languages=summaries["lang"],
        scripts=summaries["script"],
        invariance=CellViews[RobustnessCell](
            by_language=robustness_cells(plan, run, "lang", opts),
            by_script=robustness_cells(plan, run, "script", opts),
        ),
        directional=CellViews[DirectionalCell](
            by_language=directional_cells(plan, run, "lang", opts),
            by_script=directional_cells(plan, run, "script", opts),
        ),
    )
