"""Single-model probe statistics from hand-built plans with known flips: exact expectations,
checked against `robustness.stats` (which is itself checked against scipy/statsmodels)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from robustness import get_family
from robustness.stats import (
    clustered_flip_rate,
    confidence_drop,
    holm,
    margin_drop,
    mcnemar_exact,
    wilson_interval,
)
from service.probe.assemble import StatsOptions, assemble_probe, distribution
from service.probe.language import LanguageDetectorInfo
from service.probe.plan import PreparedInput, ProbePlan, ProbeSpec, Sample
from service.probe.schemas import ModelInfo, ProbeResponse
from service.probe.scoring import ModelRun, Scored

LABELS = ("not_paraphrase", "paraphrase")
NOT, PARA = LABELS
OPTS = StatsOptions(confidence=0.95, n_resamples=400, seed=7, max_examples=2)
DETECTOR = LanguageDetectorInfo(method="test", languages=("de", "fr"))
MODEL = ModelInfo(
    name="m", version="1", sha256="0" * 64, precision="fp32", task="pair-classification",
    labels=list(LABELS),
)  # fmt: skip


def scored(label: str, p_top: float = 0.8) -> Scored:
    p_para = p_top if label == PARA else 1.0 - p_top
    return Scored(label, (1.0 - p_para, p_para))


@dataclass
class Case:
    """One input: its language, gold label, clean prediction and, per sample, the perturbed
    prediction (None: the sample is a no-op for the model; "skip": the family skipped it)."""

    lang: str
    gold: str | None
    clean: Scored
    perturbed: list[Scored | str | None] = field(default_factory=list)


def build(
    cases: list[Case], families: list[tuple[str, float]], samples: int = 1
) -> tuple[ProbePlan, ModelRun]:
    inputs = tuple(
        PreparedInput(i, f"id{i}", f"text {i}", f"pair {i}", c.gold, c.lang, False, "Latin")
        for i, c in enumerate(cases)
    )
    specs = tuple(
        ProbeSpec(k, get_family(name), severity, samples, "both")
        for k, (name, severity) in enumerate(families)
    )
    plan_samples, noop, perturbed = [], [], []
    for spec in specs:
        for i, case in enumerate(cases):
            for s in range(samples):
                outcome = case.perturbed[s]
                skipped = "unsupported script" if outcome == "skip" else None
                plan_samples.append(
                    Sample(
                        spec.index, i, s, f"text {i}~{spec.index}.{s}", f"pair {i}", True, skipped
                    )
                )
                noop.append(outcome is None)
                perturbed.append(outcome if isinstance(outcome, Scored) else None)
    plan = ProbePlan(inputs, specs, tuple(plan_samples), seed=0)
    run = ModelRun(LABELS, tuple(c.clean for c in cases), tuple(perturbed), tuple(noop))
    return plan, run


def probe(plan: ProbePlan, run: ModelRun) -> ProbeResponse:
    return assemble_probe(plan, run, MODEL, OPTS, DETECTOR)


def german_cases() -> list[Case]:
    """Ten German inputs, gold paraphrase. Clean: 0-7 right, 8-9 wrong. Perturbed: 0, 1, 2 flip
    to wrong, 8 flips to right, 9 is a no-op."""
    cases = []
    for i in range(10):
        clean = scored(PARA if i < 8 else NOT)
        if i in (0, 1, 2):
            after: Scored | None = scored(NOT, 0.6)
        elif i == 8:
            after = scored(PARA, 0.55)
        elif i == 9:
            after = None
        else:
            after = scored(PARA, 0.7)
        cases.append(Case("de", PARA, clean, [after]))
    return cases


def test_flip_rate_accuracy_and_mcnemar_are_exact() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1)])
    report = probe(plan, run)
    (cell,) = report.invariance.by_language
    assert (cell.family, cell.group, cell.n_inputs, cell.n_samples, cell.n_noop) == (
        "char_swap", "de", 9, 9, 1,
    )  # fmt: skip
    # The no-op (input 9) is out of every denominator: 4 flips of 9, not of 10.
    low, high = wilson_interval(4, 9)
    assert (cell.flip_rate.estimate, cell.flip_rate.ci_low, cell.flip_rate.ci_high) == (
        4 / 9, low, high,
    )  # fmt: skip
    assert cell.flip_rate.method == "wilson"
    assert cell.clean_accuracy.estimate == 8 / 9
    assert (cell.clean_accuracy.ci_low, cell.clean_accuracy.ci_high) == wilson_interval(8, 9)
    assert cell.perturbed_accuracy.estimate == 6 / 9
    assert cell.accuracy_change.estimate == pytest.approx(-2 / 9)
    assert cell.accuracy_change.ci_low is not None and cell.accuracy_change.ci_low < -2 / 9
    expected = mcnemar_exact([True] * 8 + [False], [False] * 3 + [True] * 6)
    assert (cell.mcnemar.clean_only_correct, cell.mcnemar.perturbed_only_correct) == (3, 1)
    assert cell.mcnemar.p_value == expected.p_value == 0.625
    assert cell.mcnemar.p_holm == 0.625  # one test in the view: Holm changes nothing
    assert cell.clean_predictions.counts == {NOT: 1, PARA: 8}
    assert cell.clean_predictions.warning is None


def test_language_summary_counts_every_input_including_noops() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1)])
    report = probe(plan, run)
    (german,) = report.languages
    assert (german.group, german.n_inputs, german.n_lang_detected) == ("de", 10, 0)
    assert german.clean_accuracy.estimate == 0.8
    assert (german.clean_accuracy.ci_low, german.clean_accuracy.ci_high) == wilson_interval(8, 10)
    assert report.evaluations.model_dump() == {"clean": 10, "perturbed": 9, "noop": 1, "skipped": 0}
    assert [s.group for s in report.scripts] == ["Latin"]


def test_confidence_and_margin_drops_match_the_library_on_single_samples() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1)])
    (cell,) = probe(plan, run).invariance.by_language
    seen = range(9)  # input 9 is a no-op
    clean = [run.clean[i].probabilities for i in seen]
    after = [run.perturbed[i].probabilities for i in seen]  # type: ignore[union-attr]
    gold = [1] * 9
    kwargs = {"n_resamples": OPTS.n_resamples, "seed": OPTS.seed}
    for ours, theirs in (
        (cell.confidence_drop, confidence_drop(clean, after, gold, **kwargs)),
        (cell.margin_drop, margin_drop(clean, after, gold, **kwargs)),
    ):
        assert (ours.estimate, ours.ci_low, ours.ci_high) == pytest.approx(
            (theirs.estimate, theirs.ci_low, theirs.ci_high)
        )
    assert cell.drop_reference == "gold"
    # Inputs 0-2 lose 0.8 -> 0.4, inputs 3-7 lose 0.8 -> 0.7, input 8 gains 0.2 -> 0.55.
    assert cell.confidence_drop.estimate == pytest.approx((3 * 0.4 + 5 * 0.1 - 0.35) / 9)


def test_flipped_examples_show_both_texts_and_predictions_up_to_the_limit() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1)])
    (cell,) = probe(plan, run).invariance.by_language
    assert [e.input_index for e in cell.flipped_examples] == [0, 1]  # max_examples = 2
    first = cell.flipped_examples[0]
    assert (first.id, first.gold, first.sample_index) == ("id0", PARA, 0)
    assert (first.original.text, first.perturbed.text) == ("text 0", "text 0~0.0")
    assert (first.clean_prediction.label, first.clean_prediction.probability) == (PARA, 0.8)
    assert first.perturbed_prediction.label == NOT
    assert first.perturbed_prediction.probability == pytest.approx(0.6)


def test_holm_corrects_across_language_cells() -> None:
    french = [Case("fr", PARA, scored(PARA), [scored(NOT)]) for _ in range(6)]
    french += [Case("fr", PARA, scored(PARA), [scored(PARA)]) for _ in range(4)]
    plan, run = build(german_cases() + french, [("char_swap", 0.1)])
    report = probe(plan, run)
    de, fr = report.invariance.by_language
    assert (de.group, fr.group) == ("de", "fr")
    assert fr.flip_rate.estimate == 0.6
    assert fr.mcnemar.p_value == mcnemar_exact([True] * 10, [False] * 6 + [True] * 4).p_value
    adjusted = holm([de.mcnemar.p_value, fr.mcnemar.p_value]).adjusted  # type: ignore[list-item]
    assert (de.mcnemar.p_holm, fr.mcnemar.p_holm) == adjusted
    # The script view pools both languages into one Latin cell with its own correction.
    (latin,) = report.invariance.by_script
    assert (latin.group, latin.n_inputs, latin.flip_rate.estimate) == ("Latin", 19, 10 / 19)
    assert latin.mcnemar.p_holm == latin.mcnemar.p_value


def test_severity_sweeps_of_one_family_stay_separate_cells() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1), ("char_swap", 0.3)])
    cells = probe(plan, run).invariance.by_language
    assert [(c.perturbation, c.severity) for c in cells] == [(0, 0.1), (1, 0.3)]


def test_a_dominant_clean_label_warns_that_the_model_is_trivially_robust() -> None:
    cases = [Case("de", PARA if i else NOT, scored(NOT), [scored(NOT)]) for i in range(20)]
    report = probe(*build(cases, [("char_swap", 0.1)]))
    (cell,) = report.invariance.by_language
    assert cell.flip_rate.estimate == 0.0
    assert cell.clean_predictions.dominant_label == NOT
    assert cell.clean_predictions.dominant_share == 1.0
    assert "trivially robust" in (cell.clean_predictions.warning or "")
    assert any("lang de" in w and "trivially robust" in w for w in report.warnings)
    assert cell.clean_accuracy.estimate == 0.05


def test_dominance_needs_over_ninety_percent_of_ten_or_more() -> None:
    assert distribution(LABELS, [PARA] * 9 + [NOT], what="x").warning is None
    assert distribution(LABELS, [PARA] * 19 + [NOT], what="x").warning is not None
    assert distribution(LABELS, [], what="x").dominant_label is None
    few = distribution(LABELS, [PARA] * 9, what="x")  # too few to tell bias from chance
    assert (few.dominant_share, few.warning) == (1.0, None)


def test_several_samples_use_the_cluster_bootstrap_of_the_library() -> None:
    # Per input, three samples: input 0 flips 3/3, input 1 flips 1/3, inputs 2-4 never.
    flips = [[True, True, True], [True, False, False]] + [[False] * 3] * 3
    cases = [
        Case("de", PARA, scored(PARA), [scored(NOT) if f else scored(PARA) for f in row])
        for row in flips
    ]
    (cell,) = probe(*build(cases, [("char_swap", 0.1)], samples=3)).invariance.by_language
    expected = clustered_flip_rate(flips, n_resamples=OPTS.n_resamples, seed=OPTS.seed)
    assert cell.flip_rate.estimate == pytest.approx((1 + 1 / 3) / 5)
    assert (cell.flip_rate.ci_low, cell.flip_rate.ci_high) == (expected.ci_low, expected.ci_high)
    assert cell.flip_rate.method.startswith("cluster bootstrap")
    assert (cell.any_flip_rate.estimate, cell.n_samples) == (2 / 5, 15)
    assert cell.perturbed_accuracy.estimate == pytest.approx(1 - (1 + 1 / 3) / 5)
    assert cell.confidence_drop.method == "paired cluster bootstrap (inputs resampled)"


def test_without_gold_labels_accuracy_is_undefined_with_a_reason() -> None:
    cases = [Case("de", None, scored(PARA), [scored(NOT if i < 2 else PARA)]) for i in range(5)]
    report = probe(*build(cases, [("char_swap", 0.1)]))
    (cell,) = report.invariance.by_language
    assert cell.flip_rate.estimate == 0.4
    assert cell.clean_accuracy.estimate is None and cell.clean_accuracy.note
    assert cell.mcnemar.p_value is None and cell.mcnemar.p_holm is None
    assert cell.drop_reference == "clean_prediction"
    assert report.languages[0].clean_accuracy.note == "gold labels given for 0 of 5"


def test_directional_families_are_reported_apart_as_change_rates() -> None:
    # Word-order swaps should turn paraphrases into non-paraphrases: 3 of 4 do; the
    # non-paraphrase stays one.
    cases = [Case("de", PARA, scored(PARA), [scored(NOT if i < 3 else PARA)]) for i in range(4)]
    cases.append(Case("de", NOT, scored(NOT), [scored(NOT)]))
    report = probe(*build(cases, [("char_swap", 0.1), ("pair_word_order", 0.5)]))
    assert [c.family for c in report.invariance.by_language] == ["char_swap"]
    (cell,) = report.directional.by_language
    assert (cell.family, cell.n_inputs, cell.reference) == ("pair_word_order", 5, "gold")
    assert cell.change_rate.estimate == 3 / 5
    assert cell.change_rate_by_reference[PARA].estimate == 3 / 4
    assert cell.change_rate_by_reference[NOT].estimate == 0.0
    assert cell.perturbed_predictions.counts == {NOT: 4, PARA: 1}
    assert [p.kind for p in report.perturbations] == ["invariance", "directional"]
    assert report.perturbations[1].spec_version.startswith("pair_word_order@")


def test_skipped_inputs_are_listed_and_left_out() -> None:
    cases = german_cases()[:4] + [Case("ja", PARA, scored(PARA), ["skip"]) for _ in range(3)]
    report = probe(*build(cases, [("keyboard_typo", 0.1)]))
    assert [c.group for c in report.invariance.by_language] == ["de"]
    (skipped,) = report.skipped
    assert (skipped.perturbation, skipped.family, skipped.lang, skipped.n_inputs) == (
        0, "keyboard_typo", "ja", 3,
    )  # fmt: skip
    assert report.evaluations.skipped == 3


def test_a_family_skipped_everywhere_and_mostly_noops_are_warned_about() -> None:
    cases = [Case("ja", PARA, scored(PARA), ["skip"]) for _ in range(2)]
    report = probe(*build(cases, [("keyboard_typo", 0.1)]))
    assert any("supports none of the inputs" in w for w in report.warnings)
    noops = [Case("de", PARA, scored(PARA), [None]) for _ in range(3)]
    noops.append(Case("de", PARA, scored(PARA), [scored(PARA)]))
    report = probe(*build(noops, [("width_shift", 0.5)]))
    assert any("3 of 4 samples are no-ops" in w for w in report.warnings)


def test_the_report_echoes_what_repeats_it() -> None:
    plan, run = build(german_cases(), [("pair_swap", 1.0)])
    report = probe(plan, run)
    assert (report.seed, report.rng_scheme, report.correction) == (
        0,
        "polyprobe-robustness/1",
        "holm",
    )
    assert report.bootstrap_resamples == OPTS.n_resamples
    assert report.model == MODEL
    assert report.perturbations[0].note and "symmetric" in report.perturbations[0].note
    assert probe(plan, run).model_dump_json() == report.model_dump_json()
