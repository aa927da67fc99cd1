"""Robustness statistics with uncertainty, in pure numpy (and the standard library).

Rates get Wilson score intervals (good coverage near 0 and 1, where flip rates live); changes
measured on the same examples get paired percentile-bootstrap intervals; several perturbed
samples of one input are resampled together (cluster bootstrap), because samples of the same
input are not independent; two models on the same inputs are compared with the exact McNemar
test; families of tests (languages x families) are corrected with Holm or Benjamini-Hochberg.

Every estimate carries its n. Where nothing can be estimated (n = 0, no gold labels) the numbers
are None, not NaN, with a note that says why: None survives JSON, NaN does not.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]
_BOOTSTRAP_CHUNK = 256  # resamples drawn at a time: bounds memory at 256 x n indices


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval; all None when it cannot be estimated."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    method: str
    confidence: float
    note: str | None = None

    @property
    def defined(self) -> bool:
        return self.estimate is not None


def _undefined(method: str, confidence: float, note: str, n: int = 0) -> Estimate:
    return Estimate(None, None, None, n, method, confidence, note)


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _bools(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.dtype != np.bool_ and array.size and not np.isin(array, (0, 1)).all():
        raise ValueError(f"{name} must hold booleans (or 0/1), got values such as {array[:3]}")
    return array.astype(np.bool_)


def _floats(values: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite numbers")
    return array


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (no continuity correction)."""
    if n <= 0:
        raise ValueError(f"the Wilson interval needs n >= 1, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    z = _z(confidence)
    p = successes / n
    z2_n = z * z / n
    centre = (p + z2_n / 2.0) / (1.0 + z2_n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2_n / (4.0 * n)) / (1.0 + z2_n)
    # At 0 or n successes the bound is exactly 0 or 1; float error would leave 1e-17 there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def proportion(outcomes: ArrayLike, confidence: float = 0.95) -> Estimate:
    """The share of True outcomes with a Wilson interval."""
    values = _bools(outcomes, "outcomes")
    if values.size == 0:
        return _undefined("wilson", confidence, "no observations (n = 0)")
    successes = int(values.sum())
    low, high = wilson_interval(successes, int(values.size), confidence)
    return Estimate(successes / values.size, low, high, int(values.size), "wilson", confidence)


def accuracy(correct: ArrayLike, confidence: float = 0.95) -> Estimate:
    """Accuracy (share of correct predictions) with a Wilson interval."""
    return proportion(correct, confidence)


def flip_rate(flipped: ArrayLike, confidence: float = 0.95) -> Estimate:
    """Share of inputs whose prediction changed under perturbation (one sample per input)."""
    return proportion(flipped, confidence)


def _bootstrap_means(values: FloatArray, n_resamples: int, seed: int) -> FloatArray:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_resamples - start)
        indices = rng.integers(0, values.size, size=(size, values.size))
        means[start : start + size] = values[indices].mean(axis=1)
    return means


def bootstrap_mean(
    values: ArrayLike,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    method: str = "percentile bootstrap",
) -> Estimate:
    """Mean of per-unit values with a percentile bootstrap interval (units resampled)."""
    array = _floats(values, "values")
    _z(confidence)
    if array.size == 0:
        return _undefined(method, confidence, "no observations (n = 0)")
    means = _bootstrap_means(array, n_resamples, seed)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Estimate(
        float(array.mean()), float(low), float(high), int(array.size), method, confidence
    )


def paired_accuracy_change(
    clean_correct: ArrayLike,
    perturbed_correct: ArrayLike,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Perturbed minus clean accuracy on the same examples (negative = accuracy lost).

    The interval resamples examples, keeping each example's clean and perturbed outcome
    together, which is what makes it much narrower than two independent intervals.
    """
    clean = _bools(clean_correct, "clean_correct")
    perturbed = _bools(perturbed_correct, "perturbed_correct")
    _same_length(clean, perturbed)
    diffs = perturbed.astype(np.float64) - clean.astype(np.float64)
    return bootstrap_mean(
        diffs,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        method="paired percentile bootstrap",
    )


def _same_length(a: NDArray[np.generic], b: NDArray[np.generic]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"paired inputs must have the same length, got {a.shape[0]} and {b.shape[0]}"
        )


def _groups(flips_per_input: Iterable[Sequence[bool]]) -> tuple[list[NDArray[np.bool_]], int]:
    groups = [_bools(list(g), "flips of one input") for g in flips_per_input]
    kept = [g for g in groups if g.size]
    return kept, len(groups) - len(kept)


def clustered_flip_rate(
    flips_per_input: Iterable[Sequence[bool]],
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Flip rate when each input has several perturbed samples: inputs are the clusters.

    The estimate weights every input equally (the mean over inputs of its share of flipped
    samples: the chance that a random perturbation of a random input flips it); the interval
    resamples whole inputs, so correlated samples of one input do not fake precision. Inputs
    with no samples (e.g. every sample was a no-op) are left out and counted in the note.
    """
    method = "cluster bootstrap (inputs resampled)"
    groups, empty = _groups(flips_per_input)
    note = f"{empty} input(s) without samples left out" if empty else None
    if not groups:
        return _undefined(method, confidence, note or "no inputs (n = 0)")
    per_input = np.array([g.mean() for g in groups], dtype=np.float64)
    result = bootstrap_mean(
        per_input, n_resamples=n_resamples, seed=seed, confidence=confidence, method=method
    )
    return replace(result, note=note)


def any_flip_rate(flips_per_input: Iterable[Sequence[bool]], confidence: float = 0.95) -> Estimate:
    """Worst case: share of inputs for which at least one perturbed sample flipped (Wilson)."""
    groups, empty = _groups(flips_per_input)
    result = proportion([bool(g.any()) for g in groups], confidence)
    if empty:
        extra = f"{empty} input(s) without samples left out"
        return replace(result, note=f"{result.note}; {extra}" if result.note else extra)
    return result


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test: two classifiers (or clean vs perturbed) on the same examples."""

    n: int
    a_only: int  # examples A gets right and B gets wrong
    b_only: int  # examples B gets right and A gets wrong
    p_value: float | None
    note: str | None = None


def mcnemar_exact(a_correct: ArrayLike, b_correct: ArrayLike) -> McNemarResult:
    """Two-sided exact McNemar test: a binomial(a_only + b_only, 1/2) test on discordant pairs.

    Computed with exact integers, so it stays exact for thousands of discordant pairs.
    """
    a = _bools(a_correct, "a_correct")
    b = _bools(b_correct, "b_correct")
    _same_length(a, b)
    if a.size == 0:
        return McNemarResult(0, 0, 0, None, "no paired examples (n = 0)")
    a_only = int((a & ~b).sum())
    b_only = int((~a & b).sum())
    discordant = a_only + b_only
    if discordant == 0:
        return McNemarResult(
            int(a.size), 0, 0, 1.0, "no discordant pairs: no evidence of a difference"
        )
    smaller = min(a_only, b_only)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1))
    p_value = min(1.0, 2 * tail / 2**discordant)
    return McNemarResult(int(a.size), a_only, b_only, p_value)


def mean_drop(
    before: ArrayLike,
    after: ArrayLike,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Mean of before - after over paired examples (positive = dropped), paired bootstrap CI."""
    b = _floats(before, "before")
    a = _floats(after, "after")
    _same_length(b, a)
    return bootstrap_mean(
        b - a,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        method="paired percentile bootstrap",
    )


def _probabilities(probs: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"{name} must have shape (n_examples, n_labels >= 2), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _references(clean: FloatArray, labels: ArrayLike | None) -> NDArray[np.intp]:
    if labels is None:
        return np.asarray(np.argmax(clean, axis=1), dtype=np.intp)
    refs = np.asarray(labels, dtype=np.intp)
    if refs.shape != (clean.shape[0],) or ((refs < 0) | (refs >= clean.shape[1])).any():
        raise ValueError(f"labels must be {clean.shape[0]} indices in [0, {clean.shape[1]})")
    return refs


def confidence_drop(
    clean_probs: ArrayLike,
    perturbed_probs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Mean drop of the probability of the reference label (gold `labels`, else the clean
    prediction) from clean to perturbed input, with a paired bootstrap interval."""
    clean = _probabilities(clean_probs, "clean_probs")
    perturbed = _probabilities(perturbed_probs, "perturbed_probs")
    if clean.shape != perturbed.shape:
        raise ValueError(f"probability arrays differ in shape: {clean.shape} vs {perturbed.shape}")
    rows = np.arange(clean.shape[0])
    refs = _references(clean, labels)
    return mean_drop(
        clean[rows, refs],
        perturbed[rows, refs],
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )


def signed_margin(probs: ArrayLike, refs: ArrayLike) -> FloatArray:
    """p(reference) minus the largest other probability: negative once the prediction flips."""
    array = _probabilities(probs, "probs")
    ref_index = np.asarray(refs, dtype=np.intp)
    rows = np.arange(array.shape[0])
    others = array.copy()
    others[rows, ref_index] = -np.inf
    return array[rows, ref_index] - others.max(axis=1)  # type: ignore[no-any-return]


def margin_drop(
    clean_probs: ArrayLike,
    perturbed_probs: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Estimate:
    """Mean drop of the signed margin of the reference label, with a paired bootstrap CI.

    Unlike the top-1/top-2 gap, the signed margin keeps falling after a flip, so a perturbation
    that flips confidently counts for more than one that barely flips.
    """
    clean = _probabilities(clean_probs, "clean_probs")
    perturbed = _probabilities(perturbed_probs, "perturbed_probs")
    if clean.shape != perturbed.shape:
        raise ValueError(f"probability arrays differ in shape: {clean.shape} vs {perturbed.shape}")
    refs = _references(clean, labels)
    return mean_drop(
        signed_margin(clean, refs),
        signed_margin(perturbed, refs),
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
    )


@dataclass(frozen=True)
class AdjustedPValues:
    method: str
    alpha: float
    p_values: tuple[float, ...]
    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]


def _p_array(p_values: Sequence[float]) -> FloatArray:
    array = np.asarray(p_values, dtype=np.float64)
    if array.ndim != 1 or ((array < 0) | (array > 1) | ~np.isfinite(array)).any():
        raise ValueError("p_values must be a flat sequence of numbers in [0, 1]")
    return array


def _adjusted(method: str, alpha: float, raw: FloatArray, adjusted: FloatArray) -> AdjustedPValues:
    return AdjustedPValues(
        method=method,
        alpha=alpha,
        p_values=tuple(float(p) for p in raw),
        adjusted=tuple(float(p) for p in adjusted),
        reject=tuple(bool(p <= alpha) for p in adjusted),
    )


def holm(p_values: Sequence[float], alpha: float = 0.05) -> AdjustedPValues:
    """Holm's step-down adjustment: controls the family-wise error rate, any dependence."""
    raw = _p_array(p_values)
    m = raw.size
    order = np.argsort(raw, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * raw[order])
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = np.maximum.accumulate(stepped) if m else stepped
    return _adjusted("holm", alpha, raw, adjusted)


def benjamini_hochberg(p_values: Sequence[float], alpha: float = 0.05) -> AdjustedPValues:
    """Benjamini-Hochberg step-up adjustment: controls the false discovery rate."""
    raw = _p_array(p_values)
    m = raw.size
    order = np.argsort(raw, kind="stable")
    scaled = np.minimum(1.0, raw[order] * m / np.arange(1, m + 1))
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1] if m else scaled
    return _adjusted("benjamini-hochberg", alpha, raw, adjusted)


@dataclass(frozen=True)
class ProbeOutcome:
    """One perturbed sample of one input, as the service observed it."""

    example_id: str
    family: str
    lang: str | None
    script: str
    sample_index: int
    flipped: bool
    noop: bool = False
    clean_correct: bool | None = None
    perturbed_correct: bool | None = None


@dataclass(frozen=True)
class CellSummary:
    """Robustness of one cell (e.g. one family in one language)."""

    key: tuple[str, ...]
    n_inputs: int  # inputs with at least one sample that was not a no-op
    n_samples: int  # samples that were not no-ops
    n_noop: int  # samples the model's normaliser made identical to the input
    flip_rate: Estimate
    any_flip_rate: Estimate
    clean_accuracy: Estimate
    perturbed_accuracy: Estimate
    accuracy_change: Estimate
    # Clean vs perturbed correctness on each input's first sample; adjusted across the cells.
    mcnemar: McNemarResult
    p_adjusted: float | None = None


GroupField = Literal["family", "lang", "script"]


def aggregate(
    outcomes: Iterable[ProbeOutcome],
    by: Sequence[GroupField] = ("family", "lang"),
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    correction: Literal["holm", "benjamini-hochberg", "none"] = "holm",
) -> dict[tuple[str, ...], CellSummary]:
    """Summaries per cell (family x language, family x script, ...), in sorted key order.

    No-op samples are counted but excluded from every rate: a perturbation the model never saw
    says nothing about its robustness. Each cell's McNemar p-value is then corrected across all
    cells of this call (Holm by default), because a report with 15 languages x 10 families runs
    150 tests.
    """
    cells: dict[tuple[str, ...], list[ProbeOutcome]] = defaultdict(list)
    for outcome in outcomes:
        key = tuple(_field(outcome, name) for name in by)
        cells[key].append(outcome)
    summaries = {
        key: _summarise(key, cells[key], n_resamples, seed, confidence) for key in sorted(cells)
    }
    if correction == "none":
        return summaries
    tested = [key for key, s in summaries.items() if s.mcnemar.p_value is not None]
    adjust = holm if correction == "holm" else benjamini_hochberg
    adjusted = adjust([summaries[k].mcnemar.p_value or 0.0 for k in tested]).adjusted
    for key, p in zip(tested, adjusted, strict=True):
        summaries[key] = replace(summaries[key], p_adjusted=p)
    return summaries


def _field(outcome: ProbeOutcome, name: str) -> str:
    if name not in ("family", "lang", "script"):
        raise ValueError(f"cannot group by {name!r}; use family, lang or script")
    value: str | None = getattr(outcome, name)
    return "und" if value is None else value


def _summarise(
    key: tuple[str, ...],
    outcomes: list[ProbeOutcome],
    n_resamples: int,
    seed: int,
    confidence: float,
) -> CellSummary:
    by_input: dict[str, list[ProbeOutcome]] = defaultdict(list)
    for outcome in outcomes:
        if not outcome.noop:
            by_input[outcome.example_id].append(outcome)
    inputs = [sorted(samples, key=lambda o: o.sample_index) for samples in by_input.values()]
    flips = [[o.flipped for o in samples] for samples in inputs]
    several = any(len(f) > 1 for f in flips)
    rate = (
        clustered_flip_rate(flips, n_resamples=n_resamples, seed=seed, confidence=confidence)
        if several
        else flip_rate([f[0] for f in flips], confidence)
    )
    clean, perturbed, change, mcnemar = _accuracies(inputs, several, n_resamples, seed, confidence)
    return CellSummary(
        key=key,
        n_inputs=len(inputs),
        n_samples=sum(len(f) for f in flips),
        n_noop=sum(o.noop for o in outcomes),
        flip_rate=rate,
        any_flip_rate=any_flip_rate(flips, confidence),
        clean_accuracy=clean,
        perturbed_accuracy=perturbed,
        accuracy_change=change,
        mcnemar=mcnemar,
    )


def _accuracies(
    inputs: list[list[ProbeOutcome]],
    several: bool,
    n_resamples: int,
    seed: int,
    confidence: float,
) -> tuple[Estimate, Estimate, Estimate, McNemarResult]:
    labelled = all(
        o.clean_correct is not None and o.perturbed_correct is not None for s in inputs for o in s
    )
    if not inputs or not labelled:
        note = "no inputs (n = 0)" if not inputs else "gold labels missing for some inputs"
        missing = _undefined("wilson", confidence, note, len(inputs))
        return missing, missing, missing, McNemarResult(len(inputs), 0, 0, None, note)
    clean_by_input = []
    for samples in inputs:
        values = {o.clean_correct for o in samples}
        if len(values) != 1:
            raise ValueError(f"example {samples[0].example_id!r} has inconsistent clean_correct")
        clean_by_input.append(bool(values.pop()))
    clean = np.array(clean_by_input, dtype=np.float64)
    perturbed = np.array(
        [np.mean([bool(o.perturbed_correct) for o in samples]) for samples in inputs]
    )
    boot_method = "cluster bootstrap (inputs resampled)"
    perturbed_acc = (
        bootstrap_mean(
            perturbed, n_resamples=n_resamples, seed=seed, confidence=confidence, method=boot_method
        )
        if several
        else accuracy(perturbed.astype(bool), confidence)
    )
    change = bootstrap_mean(
        perturbed - clean,
        n_resamples=n_resamples,
        seed=seed,
        confidence=confidence,
        method="paired " + ("cluster " if several else "") + "percentile bootstrap",
    )
    first = [bool(samples[0].perturbed_correct) for samples in inputs]
    return (
        accuracy(clean.astype(bool), confidence),
        perturbed_acc,
        change,
        mcnemar_exact(clean.astype(bool), first),
    )
