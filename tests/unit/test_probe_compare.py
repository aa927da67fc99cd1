"""Paired two-model statistics on hand-built runs with known flips."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from robustness.stats import holm, mcnemar_exact
from service.errors import InvalidInput
from service.probe.compare import assemble_compare
from service.probe.run import check_comparable
from service.probe.scoring import ModelRun
from tests.unit.test_probe_assemble import (
    DETECTOR,
    MODEL,
    NOT,
    OPTS,
    PARA,
    Case,
    build,
    german_cases,
    scored,
)

MODEL_B = MODEL.model_copy(update={"name": "b"})


def test_a_model_against_itself_differs_by_nothing() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1), ("pair_word_order", 0.5)])
    report = assemble_compare(plan, (run, run), (MODEL, MODEL_B), OPTS, DETECTOR)
    (cell,) = report.invariance.by_language
    for difference in (
        cell.flip_rate_difference,
        cell.perturbed_accuracy_difference,
        cell.accuracy_change_difference,
    ):
        assert difference is not None
        assert (difference.estimate, difference.ci_low, difference.ci_high) == (0.0, 0.0, 0.0)
    for test in (cell.flip_test, cell.perturbed_accuracy_test):
        assert test is not None
        assert (test.a_only, test.b_only, test.p_value, test.p_holm) == (0, 0, 1.0, 1.0)
    assert cell.a.flip_rate == cell.b.flip_rate
    assert cell.a.flip_rate.estimate == 4 / 9
    (language,) = report.languages
    assert language.clean_accuracy_difference.estimate == 0.0
    assert language.clean_accuracy_test.p_value == 1.0
    (directional,) = report.directional.by_language
    assert directional.flip_test.outcome == "changed"
    assert directional.perturbed_accuracy_test is None
    assert report.difference == "model_a - model_b"
    assert report.evaluations["a"] == report.evaluations["b"]


def test_known_discordance_gives_exact_differences_and_mcnemar() -> None:
    # Model A flips inputs 0, 1, 2 (and 8) as in german_cases; model B flips nothing.
    plan, a = build(german_cases(), [("char_swap", 0.1)])
    steady = [Case(c.lang, c.gold, c.clean, [c.clean]) for c in german_cases()]
    steady[9] = german_cases()[9]  # same no-op in both
    _, b = build(steady, [("char_swap", 0.1)])
    report = assemble_compare(plan, (a, b), (MODEL, MODEL_B), OPTS, DETECTOR)
    (cell,) = report.invariance.by_language
    assert cell.flip_rate_difference.estimate == pytest.approx(4 / 9)
    assert (cell.flip_test.a_only, cell.flip_test.b_only) == (4, 0)
    assert cell.flip_test.p_value == mcnemar_exact([1, 1, 1, 0, 0, 0, 0, 0, 1], [0] * 9).p_value
    assert cell.flip_test.p_value == 0.125
    # Perturbed correctness: A gets 0, 1, 2 wrong and 8 right; B gets 8 wrong only.
    assert cell.perturbed_accuracy_difference is not None
    assert cell.perturbed_accuracy_difference.estimate == pytest.approx(6 / 9 - 8 / 9)
    assert cell.perturbed_accuracy_test is not None
    assert (cell.perturbed_accuracy_test.a_only, cell.perturbed_accuracy_test.b_only) == (1, 3)
    assert cell.accuracy_change_difference is not None
    assert cell.accuracy_change_difference.estimate == pytest.approx(-2 / 9)
    assert cell.a.accuracy_change is not None and cell.b.accuracy_change is not None
    assert cell.b.accuracy_change.estimate == 0.0


def test_a_noop_for_one_model_only_is_left_out_for_both() -> None:
    plan, a = build(german_cases(), [("char_swap", 0.1)])
    b = replace(a, noop=(True, *a.noop[1:]), perturbed=(None, *a.perturbed[1:]))
    report = assemble_compare(plan, (a, b), (MODEL, MODEL_B), OPTS, DETECTOR)
    (cell,) = report.invariance.by_language
    assert (cell.n_inputs, cell.n_samples, cell.n_noop, cell.n_noop_one_model) == (8, 8, 1, 1)
    assert cell.a.flip_rate.estimate == 3 / 8  # input 0's flip is not counted for A either


def test_holm_runs_per_test_across_cells() -> None:
    french = [Case("fr", PARA, scored(PARA), [scored(NOT)]) for _ in range(6)]
    plan, a = build(german_cases() + french, [("char_swap", 0.1)])
    steady = [Case(c.lang, c.gold, c.clean, [c.clean]) for c in german_cases() + french]
    _, b = build(steady, [("char_swap", 0.1)])
    report = assemble_compare(plan, (a, b), (MODEL, MODEL_B), OPTS, DETECTOR)
    tests = [c.flip_test for c in report.invariance.by_language]
    raw = [t.p_value for t in tests]
    assert [t.p_holm for t in tests] == list(holm(raw).adjusted)  # type: ignore[arg-type]


def test_without_gold_only_flip_statistics_are_compared() -> None:
    cases = [Case("de", None, scored(PARA), [scored(NOT if i < 2 else PARA)]) for i in range(5)]
    plan, run = build(cases, [("char_swap", 0.1)])
    report = assemble_compare(plan, (run, run), (MODEL, MODEL_B), OPTS, DETECTOR)
    (cell,) = report.invariance.by_language
    assert cell.flip_rate_difference.estimate == 0.0
    assert cell.perturbed_accuracy_test is not None and cell.perturbed_accuracy_test.p_value is None
    assert report.languages[0].clean_accuracy_test.p_value is None


def _model(name: str, labels: list[str], task: str = "pair-classification") -> SimpleNamespace:
    return SimpleNamespace(name=name, manifest=SimpleNamespace(task=task, labels=labels))


def test_models_must_share_task_and_label_set() -> None:
    check_comparable(_model("a", [NOT, PARA]), _model("b", [PARA, NOT]))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"must share the label set.*a has not_paraphrase"):
        check_comparable(_model("a", [NOT, PARA]), _model("b", ["no", "yes"]))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="same task"):
        check_comparable(
            _model("a", [NOT, PARA]),
            _model("b", [NOT, PARA], "classification"),  # type: ignore[arg-type]
        )


def test_runs_are_not_mutated() -> None:
    plan, run = build(german_cases(), [("char_swap", 0.1)])
    before = ModelRun(run.labels, run.clean, run.perturbed, run.noop)
    assemble_compare(plan, (run, run), (MODEL, MODEL_B), OPTS, DETECTOR)
    assert run == before
