"""Zero-shot evaluation per language, with intervals, and paired comparison of two runs.

Accuracy gets a Wilson interval; macro-F1, the non-English average and the gap to English get
bootstrap intervals that resample *item ids*: the languages are translations of the same items,
so resampling ids jointly keeps each item's languages together, as the data's structure demands.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from robustness.stats import Estimate, accuracy, mcnemar_exact, paired_accuracy_change

N_RESAMPLES = 2000


@dataclass(frozen=True)
class Prediction:
    id: int
    lang: str
    gold: int
    pred: int


def macro_f1(golds: NDArray[np.int64], preds: NDArray[np.int64], num_labels: int) -> float:
    """Mean F1 over labels; a label absent from both gold and predictions scores 0 (sklearn's
    `zero_division=0`), so a model that never predicts a class pays for it."""
    scores = []
    for label in range(num_labels):
        tp = int(np.sum((preds == label) & (golds == label)))
        fp = int(np.sum((preds == label) & (golds != label)))
        fn = int(np.sum((preds != label) & (golds == label)))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def _estimate(values: NDArray[np.float64], point: float, method: str) -> dict[str, Any]:
    low, high = np.quantile(values, [0.025, 0.975])
    return {"estimate": point, "ci_low": float(low), "ci_high": float(high), "method": method}


def _wilson(estimate: Estimate) -> dict[str, Any]:
    return {
        "estimate": estimate.estimate,
        "ci_low": estimate.ci_low,
        "ci_high": estimate.ci_high,
        "method": estimate.method,
    }


def _by_language(predictions: Sequence[Prediction]) -> dict[str, dict[int, Prediction]]:
    grouped: dict[str, dict[int, Prediction]] = {}
    for p in predictions:
        grouped.setdefault(p.lang, {})[p.id] = p
    return grouped


def zero_shot_metrics(
    predictions: Sequence[Prediction],
    labels: Sequence[str],
    *,
    majority_label: int,
    source_lang: str = "en",
    seed: int = 0,
) -> dict[str, Any]:
    """Per-language accuracy / macro-F1 with n and 95% intervals, the non-English average, the gap
    to the source language, and the majority-class baseline for each language."""
    grouped = _by_language(predictions)
    rng = np.random.default_rng(seed)
    languages: dict[str, Any] = {}
    for lang in sorted(grouped):
        items = grouped[lang]
        golds = np.array([p.gold for p in items.values()], dtype=np.int64)
        preds = np.array([p.pred for p in items.values()], dtype=np.int64)
        n = len(golds)
        draws = rng.integers(0, n, size=(N_RESAMPLES, n))
        f1_draws = np.array([macro_f1(golds[d], preds[d], len(labels)) for d in draws])
        counts = np.bincount(preds, minlength=len(labels))
        languages[lang] = {
            "n": n,
            "accuracy": _wilson(accuracy(golds == preds)),
            "macro_f1": _estimate(
                f1_draws, macro_f1(golds, preds, len(labels)), "percentile bootstrap"
            ),
            "majority_baseline": float(np.mean(golds == majority_label)),
            "prediction_share": {labels[i]: float(c / n) for i, c in enumerate(counts)},
        }
    result: dict[str, Any] = {"languages": languages, "source_language": source_lang}
    others = [lang for lang in grouped if lang != source_lang]
    shared_ids = sorted(set.intersection(*(set(grouped[lang]) for lang in grouped)))
    if others and shared_ids:
        correct = {
            lang: np.array(
                [grouped[lang][i].gold == grouped[lang][i].pred for i in shared_ids],
                dtype=np.float64,
            )
            for lang in grouped
        }
        other_matrix = np.stack([correct[lang] for lang in sorted(others)])
        draws = rng.integers(0, len(shared_ids), size=(N_RESAMPLES, len(shared_ids)))
        average_draws = np.array([other_matrix[:, d].mean() for d in draws])
        result["average_non_source"] = {
            **_estimate(average_draws, float(other_matrix.mean()), "id bootstrap"),
            "languages": sorted(others),
            "n_ids": len(shared_ids),
        }
        if source_lang in correct:
            source = correct[source_lang]
            gap_draws = np.array([source[d].mean() - other_matrix[:, d].mean() for d in draws])
            result["gap_to_source"] = _estimate(
                gap_draws, float(source.mean() - other_matrix.mean()), "id bootstrap"
            )
    return result


def paired_comparison(
    a: Sequence[Prediction], b: Sequence[Prediction], *, seed: int = 0
) -> dict[str, Any]:
    """Per language: accuracy difference (b - a) with a paired bootstrap CI and exact McNemar,
    on the ids both runs predicted."""
    grouped_a, grouped_b = _by_language(a), _by_language(b)
    out: dict[str, Any] = {}
    for lang in sorted(set(grouped_a) & set(grouped_b)):
        ids = sorted(set(grouped_a[lang]) & set(grouped_b[lang]))
        a_correct = np.array([grouped_a[lang][i].gold == grouped_a[lang][i].pred for i in ids])
        b_correct = np.array([grouped_b[lang][i].gold == grouped_b[lang][i].pred for i in ids])
        change = paired_accuracy_change(a_correct, b_correct, seed=seed)
        test = mcnemar_exact(a_correct, b_correct)
        out[lang] = {
            "n": len(ids),
            "accuracy_a": float(a_correct.mean()),
            "accuracy_b": float(b_correct.mean()),
            "difference": _wilson(change),
            "mcnemar_p": test.p_value,
            "discordant": {"a_only": test.a_only, "b_only": test.b_only},
        }
    return out


def write_predictions(path: Path, predictions: Sequence[Prediction]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for p in predictions:
            handle.write(
                json.dumps({"id": p.id, "lang": p.lang, "gold": p.gold, "pred": p.pred}) + "\n"
            )


def read_predictions(path: Path) -> list[Prediction]:
    with path.open(encoding="utf-8") as handle:
        return [Prediction(**json.loads(line)) for line in handle if line.strip()]


def plot_languages(metrics: Mapping[str, Any], title: str, path: Path) -> Path:
    """Bar chart of per-language accuracy with 95% intervals and the majority baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    languages = metrics["languages"]
    names = list(languages)
    values = [languages[n]["accuracy"]["estimate"] for n in names]
    lows = [v - languages[n]["accuracy"]["ci_low"] for v, n in zip(values, names, strict=True)]
    highs = [languages[n]["accuracy"]["ci_high"] - v for v, n in zip(values, names, strict=True)]
    majority = [languages[n]["majority_baseline"] for n in names]
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(names), 3.6))
    axes.bar(
        names, values, yerr=[lows, highs], capsize=4, color="#4c72b0", label="accuracy (95% CI)"
    )
    axes.scatter(
        names, majority, marker="_", s=400, color="#c44e52", label="majority baseline", zorder=3
    )
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("accuracy")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
