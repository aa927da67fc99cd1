"""Zero-shot metric aggregation: macro-F1, Wilson intervals, language averages, paired comparison."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from training.evaluate import Prediction, macro_f1, paired_comparison, zero_shot_metrics

GOLD = np.array([0, 0, 1, 1, 2, 2])
PRED = np.array([0, 1, 1, 1, 0, 2])


def test_macro_f1_hand_values() -> None:
    # F1 per label: 0 -> 2/4, 1 -> 4/5, 2 -> 2/3 (tp, fp, fn = 1,1,1 / 2,1,0 / 1,0,1).
    assert macro_f1(GOLD, PRED, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # A label nobody predicts or has scores 0 and still counts (sklearn zero_division=0).
    assert macro_f1(GOLD, PRED, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 4)
    assert macro_f1(GOLD, GOLD, 3) == 1.0


def _predictions(lang: str, correct: list[bool]) -> list[Prediction]:
    return [Prediction(i, lang, 1, 1 if ok else 0) for i, ok in enumerate(correct)]


def test_zero_shot_metrics_per_language_and_average() -> None:
    en = [True] * 8 + [False] * 2
    de = [True] * 6 + [False] * 4
    fr = [True] * 5 + [False] * 5
    predictions = _predictions("en", en) + _predictions("de", de) + _predictions("fr", fr)
    metrics = zero_shot_metrics(predictions, ("no", "yes"), majority_label=1, seed=0)
    assert set(metrics["languages"]) == {"en", "de", "fr"}
    for lang, correct in (("en", en), ("de", de), ("fr", fr)):
        result = metrics["languages"][lang]
        low, high = proportion_confint(sum(correct), len(correct), alpha=0.05, method="wilson")
        assert result["n"] == 10
        assert result["accuracy"]["estimate"] == pytest.approx(sum(correct) / 10)
        assert result["accuracy"]["ci_low"] == pytest.approx(low, abs=1e-9)
        assert result["accuracy"]["ci_high"] == pytest.approx(high, abs=1e-9)
        assert result["majority_baseline"] == 1.0
        f1 = result["macro_f1"]
        assert f1["ci_low"] <= f1["estimate"] <= f1["ci_high"]
        assert sum(result["prediction_share"].values()) == pytest.approx(1.0)
    average = metrics["average_non_source"]
    assert average["estimate"] == pytest.approx(0.55)
    assert average["languages"] == ["de", "fr"] and average["n_ids"] == 10
    assert metrics["gap_to_source"]["estimate"] == pytest.approx(0.8 - 0.55)
    assert metrics["gap_to_source"]["ci_low"] <= 0.25 <= metrics["gap_to_source"]["ci_high"]
    # Resampling is seeded: the same inputs give the same intervals.
    again = zero_shot_metrics(predictions, ("no", "yes"), majority_label=1, seed=0)
    assert again == metrics


def test_source_only_has_no_average() -> None:
    metrics = zero_shot_metrics(_predictions("en", [True, False]), ("no", "yes"), majority_label=0)
    assert "average_non_source" not in metrics and "gap_to_source" not in metrics
    assert metrics["languages"]["en"]["majority_baseline"] == 0.0


def test_paired_comparison_hand_case() -> None:
    a = _predictions("de", [True, True, False, False, True])
    b = _predictions("de", [True, False, True, True, True])
    result = paired_comparison(a, b, seed=0)["de"]
    assert result["n"] == 5
    assert (result["accuracy_a"], result["accuracy_b"]) == (pytest.approx(0.6), pytest.approx(0.8))
    assert result["difference"]["estimate"] == pytest.approx(0.2)
    assert result["discordant"] == {"a_only": 1, "b_only": 2}
    # Exact McNemar: 1 of 3 discordant pairs, two-sided binomial p = 2 * (1 + 3) / 8 = 1.
    assert result["mcnemar_p"] == pytest.approx(1.0)


def test_paired_comparison_uses_common_ids_only() -> None:
    a = _predictions("en", [True, False, True])
    b = _predictions("en", [True, True])
    assert paired_comparison(a, b)["en"]["n"] == 2
