"""Statistics, checked against scipy and statsmodels (test-only dependencies)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from robustness.stats import (
    ProbeOutcome,
    accuracy,
    aggregate,
    any_flip_rate,
    benjamini_hochberg,
    bootstrap_mean,
    clustered_flip_rate,
    confidence_drop,
    flip_rate,
    holm,
    margin_drop,
    mcnemar_exact,
    mean_drop,
    paired_accuracy_change,
    signed_margin,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("k", "n"), [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (200, 2000), (1, 3)]
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy_and_statsmodels(k: int, n: int, confidence: float) -> None:
    low, high = wilson_interval(k, n, confidence)
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    sm_low, sm_high = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    assert (low, high) == pytest.approx((sm_low, sm_high), abs=1e-12)


def test_wilson_edges_are_exact() -> None:
    assert wilson_interval(0, 5)[0] == 0.0
    assert wilson_interval(5, 5)[1] == 1.0
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(6, 5)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 5, confidence=1.0)


def test_accuracy_and_flip_rate_carry_n_and_method() -> None:
    result = accuracy([True, True, False, True])
    assert result.estimate == 0.75 and result.n == 4 and result.method == "wilson"
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(3, 4))
    assert flip_rate(np.array([0, 1, 0, 0])).estimate == 0.25


def test_all_correct_and_all_wrong() -> None:
    right = accuracy([True] * 20)
    assert right.estimate == 1.0 and right.ci_high == 1.0 and right.ci_low is not None
    assert right.ci_low < 1.0
    wrong = accuracy([False] * 20)
    assert wrong.estimate == 0.0 and wrong.ci_low == 0.0


def test_empty_inputs_are_undefined_with_a_reason() -> None:
    for result in (
        accuracy([]),
        flip_rate([]),
        paired_accuracy_change([], []),
        clustered_flip_rate([]),
        any_flip_rate([]),
        mean_drop([], []),
    ):
        assert result.estimate is None and result.ci_low is None and result.ci_high is None
        assert result.n == 0 and result.note and not result.defined
    assert mcnemar_exact([], []).p_value is None


def test_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="booleans"):
        accuracy([0.5, 1.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        accuracy([[True]])
    with pytest.raises(ValueError, match="same length"):
        paired_accuracy_change([True], [True, False])
    with pytest.raises(ValueError, match="finite"):
        mean_drop([float("nan")], [0.0])


def test_paired_accuracy_change_estimate_and_determinism() -> None:
    clean = [True] * 80 + [False] * 20
    perturbed = [True] * 70 + [False] * 30
    result = paired_accuracy_change(clean, perturbed, seed=3)
    assert result.estimate == pytest.approx(-0.10)
    assert result.ci_low is not None and result.ci_high is not None
    assert result.ci_low <= -0.10 <= result.ci_high
    assert result == paired_accuracy_change(clean, perturbed, seed=3)
    assert result.method == "paired percentile bootstrap"


def test_paired_change_without_any_change_has_a_zero_width_interval() -> None:
    same = [True, False, True, True]
    result = paired_accuracy_change(same, same)
    assert (result.estimate, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)


def test_bootstrap_agrees_with_scipy_percentile_bootstrap() -> None:
    values = np.random.default_rng(0).normal(0.3, 1.0, size=400)
    ours = bootstrap_mean(values, n_resamples=4000, seed=1)
    theirs = scipy_stats.bootstrap(
        (values,), np.mean, n_resamples=4000, method="percentile", rng=np.random.default_rng(2)
    ).confidence_interval
    assert ours.ci_low == pytest.approx(theirs.low, abs=0.02)
    assert ours.ci_high == pytest.approx(theirs.high, abs=0.02)


def test_paired_bootstrap_is_narrower_than_independent_intervals() -> None:
    rng = np.random.default_rng(4)
    clean = rng.random(1000) < 0.8
    perturbed = clean & (rng.random(1000) > 0.05)  # 5% of correct ones break
    change = paired_accuracy_change(clean, perturbed, seed=0)
    assert change.ci_low is not None and change.ci_high is not None
    width = change.ci_high - change.ci_low
    clean_only = accuracy(clean)
    assert clean_only.ci_high is not None and clean_only.ci_low is not None
    assert width < (clean_only.ci_high - clean_only.ci_low)


def test_clustered_flip_rate_weights_inputs_equally_and_resamples_them() -> None:
    flips = [[True, True, True, True], [False], [False, False]]
    result = clustered_flip_rate(flips, seed=0)
    assert result.estimate == pytest.approx(1 / 3)
    assert result.n == 3 and result.method.startswith("cluster bootstrap")
    assert 0.0 <= (result.ci_low or 0.0) <= (result.ci_high or 0.0) <= 1.0
    with_empty = clustered_flip_rate([*flips, []], seed=0)
    assert with_empty.estimate == result.estimate and "1 input" in (with_empty.note or "")


def test_any_flip_rate_is_the_worst_case() -> None:
    result = any_flip_rate([[False, True], [False, False], [True]])
    assert result.estimate == pytest.approx(2 / 3) and result.n == 3


@pytest.mark.parametrize(
    ("a_only", "b_only", "both", "neither"),
    [(0, 0, 10, 5), (5, 0, 10, 5), (3, 9, 50, 2), (40, 60, 300, 100), (1, 1, 0, 0), (0, 25, 1, 1)],
)
def test_exact_mcnemar_matches_scipy_binomtest(
    a_only: int, b_only: int, both: int, neither: int
) -> None:
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    result = mcnemar_exact(a, b)
    assert (result.a_only, result.b_only, result.n) == (a_only, b_only, len(a))
    if a_only + b_only == 0:
        assert result.p_value == 1.0
    else:
        expected = scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue
        assert result.p_value == pytest.approx(expected, rel=1e-12)


def test_exact_mcnemar_stays_exact_for_many_discordant_pairs() -> None:
    a = [True] * 1100 + [False] * 900
    b = [False] * 1100 + [True] * 900
    expected = scipy_stats.binomtest(1100, 2000, 0.5).pvalue
    assert mcnemar_exact(a, b).p_value == pytest.approx(expected, rel=1e-9)


P_VALUES = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04, 0.2, 1.0]


@pytest.mark.parametrize(("ours", "method"), [(holm, "holm"), (benjamini_hochberg, "fdr_bh")])
@pytest.mark.parametrize(
    "p_values", [P_VALUES, [0.2], [0.01, 0.01, 0.01], list(np.linspace(0, 1, 15))]
)
def test_multiple_testing_matches_statsmodels(
    ours: object, method: str, p_values: list[float]
) -> None:
    result = ours(p_values, alpha=0.05)  # type: ignore[operator]
    reject, adjusted, _, _ = multipletests(p_values, alpha=0.05, method=method)
    assert result.adjusted == pytest.approx(tuple(adjusted), abs=1e-12)
    assert result.reject == tuple(bool(r) for r in reject)
    assert result.p_values == tuple(p_values)


def test_multiple_testing_edge_cases() -> None:
    assert holm([]).adjusted == () and benjamini_hochberg([]).reject == ()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def test_confidence_and_margin_drops() -> None:
    clean = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    perturbed = np.array([[0.7, 0.3], [0.5, 0.5], [0.3, 0.7]])
    # Reference = clean prediction: labels 0, 1, 0.
    drop = confidence_drop(clean, perturbed, seed=0)
    assert drop.estimate == pytest.approx(np.mean([0.2, 0.3, 0.3]))
    margins = signed_margin(perturbed, [0, 1, 0])
    assert margins == pytest.approx([0.4, 0.0, -0.4])
    m_drop = margin_drop(clean, perturbed, seed=0)
    assert m_drop.estimate == pytest.approx(np.mean([0.8 - 0.4, 0.6 - 0.0, 0.2 + 0.4]))
    gold = confidence_drop(clean, perturbed, labels=[1, 1, 1], seed=0)
    assert gold.estimate == pytest.approx(np.mean([-0.2, 0.3, -0.3]))
    with pytest.raises(ValueError, match="labels"):
        confidence_drop(clean, perturbed, labels=[0, 2, 0])
    with pytest.raises(ValueError, match="shape"):
        margin_drop(clean, perturbed[:2])


def _outcome(example: str, lang: str, sample: int, flipped: bool, **kw: object) -> ProbeOutcome:
    return ProbeOutcome(
        example_id=example,
        family=str(kw.pop("family", "char_swap")),
        lang=lang,
        script=str(kw.pop("script", "Latin")),
        sample_index=sample,
        flipped=flipped,
        **kw,  # type: ignore[arg-type]
    )


def test_aggregate_groups_by_language_and_excludes_noops() -> None:
    outcomes = [
        _outcome("1", "en", 0, True, clean_correct=True, perturbed_correct=False),
        _outcome("2", "en", 0, False, clean_correct=True, perturbed_correct=True),
        _outcome("3", "en", 0, False, noop=True, clean_correct=False, perturbed_correct=False),
        _outcome(
            "1", "hi", 0, False, script="Devanagari", clean_correct=False, perturbed_correct=False
        ),
    ]
    cells = aggregate(outcomes, by=("family", "lang"))
    assert list(cells) == [("char_swap", "en"), ("char_swap", "hi")]
    en = cells[("char_swap", "en")]
    assert (en.n_inputs, en.n_samples, en.n_noop) == (2, 2, 1)
    assert en.flip_rate.estimate == 0.5 and en.flip_rate.method == "wilson"
    assert en.clean_accuracy.estimate == 1.0 and en.perturbed_accuracy.estimate == 0.5
    assert en.accuracy_change.estimate == -0.5
    assert (en.mcnemar.a_only, en.mcnemar.b_only) == (1, 0)
    by_script = aggregate(outcomes, by=("script",))
    assert set(by_script) == {("Latin",), ("Devanagari",)}


def test_aggregate_uses_cluster_bootstrap_with_several_samples_and_corrects_p_values() -> None:
    outcomes = []
    for i in range(30):
        for k in range(3):
            flipped = i < 15 and k == 0
            outcomes.append(
                _outcome(
                    str(i), "de", k, flipped, clean_correct=True, perturbed_correct=not flipped
                )
            )
            outcomes.append(
                _outcome(str(i), "fr", k, False, clean_correct=True, perturbed_correct=True)
            )
    cells = aggregate(outcomes, by=("lang",), seed=1)
    de, fr = cells[("de",)], cells[("fr",)]
    assert de.flip_rate.estimate == pytest.approx(15 / 90)
    assert de.flip_rate.method.startswith("cluster bootstrap")
    assert de.any_flip_rate.estimate == pytest.approx(0.5)
    assert de.perturbed_accuracy.method.startswith("cluster bootstrap")
    assert de.accuracy_change.estimate == pytest.approx(-15 / 90)
    expected = holm([de.mcnemar.p_value or 0.0, fr.mcnemar.p_value or 0.0]).adjusted
    assert (de.p_adjusted, fr.p_adjusted) == pytest.approx(expected)
    assert de.mcnemar.p_value is not None and de.mcnemar.p_value < 1e-4
    assert math.isclose(fr.mcnemar.p_value or 0.0, 1.0)


def test_aggregate_without_gold_labels_reports_flips_only() -> None:
    cells = aggregate([_outcome("1", "th", 0, True), _outcome("2", "th", 0, False)], by=("lang",))
    cell = cells[("th",)]
    assert cell.flip_rate.estimate == 0.5
    assert cell.clean_accuracy.estimate is None and "gold labels" in (
        cell.clean_accuracy.note or ""
    )
    assert cell.mcnemar.p_value is None and cell.p_adjusted is None


def test_aggregate_rejects_inconsistent_clean_outcomes() -> None:
    outcomes = [
        _outcome("1", "en", 0, False, clean_correct=True, perturbed_correct=True),
        _outcome("1", "en", 1, False, clean_correct=False, perturbed_correct=True),
    ]
    with pytest.raises(ValueError, match="inconsistent"):
        aggregate(outcomes)
