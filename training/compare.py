"""Paired comparison of two training runs (e.g. STILTs vs direct) over their common seeds.

Per seed and language: accuracy difference with a paired bootstrap CI and an exact McNemar test
(Holm-corrected across the languages of that seed). Pooled over seeds: each item's correctness is
averaged over seeds first, then the per-item differences are bootstrapped over item ids, so the
interval reflects both item sampling and seed variation without treating seeds as extra items.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from robustness.stats import holm
from training.evaluate import Prediction, paired_comparison, read_predictions

N_RESAMPLES = 2000


def _seed_dirs(run_dir: Path) -> dict[int, Path]:
    found = {
        int(p.name.removeprefix("seed-")): p
        for p in run_dir.glob("seed-*")
        if (p / "predictions.jsonl").is_file() and p.name.removeprefix("seed-").isdigit()
    }
    if not found:
        raise FileNotFoundError(f"{run_dir}: no seed-*/predictions.jsonl (is it a finished run?)")
    return found


def _correct_by_item(runs: list[list[Prediction]]) -> dict[str, dict[int, float]]:
    """Per language and id: the fraction of seeds that got the item right."""
    sums: dict[str, dict[int, list[int]]] = {}
    for predictions in runs:
        for p in predictions:
            sums.setdefault(p.lang, {}).setdefault(p.id, []).append(int(p.gold == p.pred))
    return {lang: {i: float(np.mean(v)) for i, v in items.items()} for lang, items in sums.items()}


def compare_runs(baseline: Path, candidate: Path, *, seed: int = 0) -> dict[str, Any]:
    base_seeds, cand_seeds = _seed_dirs(baseline), _seed_dirs(candidate)
    common = sorted(set(base_seeds) & set(cand_seeds))
    if not common:
        raise ValueError(
            f"no common seeds: {baseline} has {sorted(base_seeds)}, {candidate} has {sorted(cand_seeds)}"
        )
    base_runs = {s: read_predictions(base_seeds[s] / "predictions.jsonl") for s in common}
    cand_runs = {s: read_predictions(cand_seeds[s] / "predictions.jsonl") for s in common}
    per_seed: dict[str, Any] = {}
    for s in common:
        table = paired_comparison(base_runs[s], cand_runs[s], seed=seed)
        languages = sorted(table)
        adjusted = holm([table[lang]["mcnemar_p"] or 1.0 for lang in languages]).adjusted
        for lang, p in zip(languages, adjusted, strict=True):
            table[lang]["mcnemar_p_holm"] = p
        per_seed[str(s)] = table
    base_items = _correct_by_item(list(base_runs.values()))
    cand_items = _correct_by_item(list(cand_runs.values()))
    rng = np.random.default_rng(seed)
    pooled: dict[str, Any] = {}
    for lang in sorted(set(base_items) & set(cand_items)):
        ids = sorted(set(base_items[lang]) & set(cand_items[lang]))
        a = np.array([base_items[lang][i] for i in ids])
        b = np.array([cand_items[lang][i] for i in ids])
        diff = b - a
        draws = rng.integers(0, len(ids), size=(N_RESAMPLES, len(ids)))
        means = diff[draws].mean(axis=1)
        low, high = np.quantile(means, [0.025, 0.975])
        pooled[lang] = {
            "n_items": len(ids),
            "seeds": common,
            "baseline_accuracy": float(a.mean()),
            "candidate_accuracy": float(b.mean()),
            "difference": float(diff.mean()),
            "ci_low": float(low),
            "ci_high": float(high),
            "method": "seed-averaged per-item difference, id bootstrap",
        }
    return {
        "baseline": str(baseline),
        "candidate": str(candidate),
        "seeds": common,
        "pooled": pooled,
        "per_seed": per_seed,
    }


def comparison_markdown(report: dict[str, Any]) -> str:
    """The pooled table plus each seed's McNemar p-values (Holm-corrected across languages)."""
    seeds = report["seeds"]
    lines = [
        f"Baseline `{report['baseline']}` vs candidate `{report['candidate']}`, seeds {seeds}.",
        "",
        "| language | n | baseline acc | candidate acc | difference [95% CI] | "
        + " | ".join(f"McNemar p (seed {s}, Holm)" for s in seeds)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(seeds),
    ]
    for lang, row in report["pooled"].items():
        p_values = [report["per_seed"][str(s)][lang]["mcnemar_p_holm"] for s in seeds]
        lines.append(
            f"| {lang} | {row['n_items']} | {row['baseline_accuracy']:.3f} | "
            f"{row['candidate_accuracy']:.3f} | {row['difference']:+.3f} "
            f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | "
            + " | ".join(f"{p:.2g}" for p in p_values)
            + " |"
        )
    return "\n".join(lines) + "\n"


def write_comparison(report: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "comparison.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    markdown_path = out_dir / "comparison.md"
    markdown_path.write_text(comparison_markdown(report), encoding="utf-8")
    pooled = report["pooled"]
    languages = list(pooled)
    diffs = [pooled[lang]["difference"] for lang in languages]
    errors = [
        [d - pooled[lang]["ci_low"] for d, lang in zip(diffs, languages, strict=True)],
        [pooled[lang]["ci_high"] - d for d, lang in zip(diffs, languages, strict=True)],
    ]
    figure, axes = plt.subplots(figsize=(1.0 + 0.8 * len(languages), 3.6))
    axes.bar(languages, diffs, yerr=errors, capsize=4, color="#55a868")
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_ylabel("accuracy difference (candidate - baseline)")
    axes.set_title(
        f"{Path(report['candidate']).name} vs {Path(report['baseline']).name}, seeds {report['seeds']} (95% CI)",
        fontsize=9,
    )
    figure.tight_layout()
    png_path = out_dir / "comparison.png"
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return [json_path, markdown_path, png_path]
