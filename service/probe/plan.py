"""A probe request turned into checked specs, prepared inputs and perturbed samples. Pure.

Everything here is model-independent: compare runs one plan through two models, so both see
byte-identical perturbed inputs by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from export.features import TextPair
from robustness import (
    Family,
    PerturbationSpec,
    PerturbationSpecError,
    apply_perturbation,
    dominant_script,
    resolve,
)
from robustness.apply import Target
from robustness.attack import ATTACK_NAME, AttackConfig

from service.errors import InvalidInput, PayloadTooLarge
from service.probe.attack_spec import ATTACK, attack_config
from service.probe.language import UNDETERMINED
from service.probe.schemas import PerturbationRequest, ProbeInput


@dataclass(frozen=True)
class ProbeSpec:
    index: int  # position in the request: cells are keyed by it, so severity sweeps stay apart
    family: Family
    severity: float
    samples: int
    target: Target
    attack: AttackConfig | None = None  # an attack search: no samples, run after the others

    @property
    def spec(self) -> PerturbationSpec:
        return PerturbationSpec(self.family.name, self.severity, self.target)

    @property
    def directional(self) -> bool:
        return not self.family.label_preserving


@dataclass(frozen=True)
class PreparedInput:
    index: int
    id: str | None
    text: str
    text_pair: str | None
    gold: str | None
    lang: str  # as given (canonical case) or detected; "und" when detection found nothing
    lang_detected: bool
    script: str

    @property
    def pair(self) -> TextPair:
        return (self.text, self.text_pair)


@dataclass(frozen=True)
class Sample:
    """One perturbed sample of one input under one spec."""

    spec: int
    input: int
    sample_index: int
    text: str
    text_pair: str | None
    changed: bool  # raw inequality; whether the model can see it is decided per model
    skipped: str | None  # why the family could not handle this input, when it could not

    @property
    def pair(self) -> TextPair:
        return (self.text, self.text_pair)


@dataclass(frozen=True)
class ProbePlan:
    inputs: tuple[PreparedInput, ...]
    specs: tuple[ProbeSpec, ...]
    samples: tuple[Sample, ...]  # spec-major: the samples of specs[:k] are a prefix
    seed: int

    def sample_range(self, spec: int) -> range:
        """Where the samples of specs[spec] sit in `samples`."""
        start = sum(s.samples for s in self.specs[:spec]) * len(self.inputs)
        return range(start, start + self.specs[spec].samples * len(self.inputs))

    def prefix(self, n_specs: int) -> ProbePlan:
        """The plan of the first `n_specs` specs: what a partial result covers."""
        end = sum(s.samples for s in self.specs[:n_specs]) * len(self.inputs)
        return ProbePlan(self.inputs, self.specs[:n_specs], self.samples[:end], self.seed)


def check_perturbations(
    requested: Sequence[PerturbationRequest], *, pair_model: bool
) -> list[ProbeSpec]:
    """Resolve every spec up front, so a bad one fails before any model call (422)."""
    specs: list[ProbeSpec] = []
    seen: dict[tuple[str, float, str], int] = {}
    for index, item in enumerate(requested):
        where = f"perturbations[{index}]"
        config = attack_config(index, item) if item.family == ATTACK_NAME else None
        try:
            family = (
                ATTACK
                if config is not None
                else resolve(item.family, item.severity, has_pair=pair_model)
            )
        except PerturbationSpecError as error:
            raise InvalidInput(
                f"{where}.{error.field}: {error}",
                details=[{"perturbation": index, **error.details()}],
            ) from None
        if item.target != "both" and (family.kind == "pair" or not pair_model):
            why = "edits the pair as a whole" if family.kind == "pair" else "gets single texts"
            raise InvalidInput(
                f"{where}.target: family {family.name!r} {why} here: leave target as 'both'"
            )
        key = (family.name, item.severity, item.target)
        if key in seen:
            raise InvalidInput(f"{where} repeats perturbations[{seen[key]}]: drop one of them")
        seen[key] = index
        samples = 0 if config is not None else item.samples
        specs.append(ProbeSpec(index, family, float(item.severity), samples, item.target, config))
    return specs


def check_gold_labels(inputs: Sequence[ProbeInput], labels: Sequence[str], model: str) -> None:
    for index, item in enumerate(inputs):
        if item.label is not None and item.label not in labels:
            raise InvalidInput(
                f"inputs[{index}].label {item.label!r} is not a label of model {model}; "
                f"its labels are: {', '.join(labels)}",
                details=[{"input": index, "field": "label", "allowed": list(labels)}],
            )


def check_unique_ids(inputs: Sequence[ProbeInput]) -> None:
    # Ids key the per-example random streams and the pairing of results: a repeat is a mistake.
    first: dict[str, int] = {}
    for index, item in enumerate(inputs):
        if item.id is None:
            continue
        if item.id in first:
            raise InvalidInput(
                f"inputs[{index}].id {item.id!r} repeats inputs[{first[item.id]}].id: "
                "ids must be unique within a probe"
            )
        first[item.id] = index


@dataclass(frozen=True)
class Limits:
    """How big a probe may be: smaller for a request that waits, larger for a job."""

    max_inputs: int
    max_evaluations: int
    inputs_setting: str
    evaluations_setting: str
    advice: str  # what to do when over: where a bigger probe can go


def check_size(n_inputs: int, specs: Sequence[ProbeSpec], n_models: int, limits: Limits) -> None:
    """413 before any work when a probe is over its input count or evaluation budget."""
    if n_inputs > limits.max_inputs:
        raise PayloadTooLarge(
            f"{n_inputs} inputs in one probe; the limit is {limits.max_inputs} "
            f"({limits.inputs_setting}): {limits.advice}"
        )
    samples = sum(spec.samples for spec in specs)
    # An attack may use its whole query budget on every input.
    queries = sum(spec.attack.query_budget for spec in specs if spec.attack is not None)
    needed = n_inputs * (samples + queries) * n_models
    if needed > limits.max_evaluations:
        models = f" x {n_models} models" if n_models > 1 else ""
        per_input = f"{samples} samples over all perturbations"
        if queries:
            per_input = f"({per_input} + {queries} attack queries)"
        raise PayloadTooLarge(
            f"this probe needs {needed} perturbed evaluations ({n_inputs} inputs x {per_input}"
            f"{models}); the limit is {limits.max_evaluations} "
            f"({limits.evaluations_setting}): send fewer inputs or samples, or {limits.advice}"
        )


def canonical_lang(tag: str) -> str:
    """BCP 47 case conventions (de, sr-Latn, pt-BR), so "DE" and "de" share a cell."""
    first, *rest = tag.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():
            parts.append(part.title())
        elif len(part) == 2 and part.isalpha():
            parts.append(part.upper())
        else:
            parts.append(part.lower())
    return "-".join(parts)


def prepare_inputs(
    inputs: Sequence[ProbeInput], detect: Callable[[Sequence[str]], list[str]]
) -> tuple[PreparedInput, ...]:
    """Inputs with their language (given, else detected from both sentences) and script."""
    undetected = [i for i, item in enumerate(inputs) if item.lang is None]
    texts = [_joined(inputs[i].text, inputs[i].text_pair, "\n") for i in undetected]
    detected = dict(zip(undetected, detect(texts), strict=True))
    return tuple(
        PreparedInput(
            index=index,
            id=item.id,
            text=item.text,
            text_pair=item.text_pair,
            gold=item.label,
            lang=canonical_lang(item.lang) if item.lang is not None else detected[index],
            lang_detected=item.lang is None,
            script=dominant_script(_joined(item.text, item.text_pair, " ")),
        )
        for index, item in enumerate(inputs)
    )


def _joined(text: str, text_pair: str | None, separator: str) -> str:
    return text if text_pair is None else f"{text}{separator}{text_pair}"


def perturb(
    inputs: Sequence[PreparedInput],
    specs: Sequence[ProbeSpec],
    seed: int,
    *,
    refuse_unsupported: bool,
) -> tuple[Sample, ...]:
    """Every sample of every spec on every input, spec-major; reproducible from the seed.

    An input whose language or script a family does not support is skipped with the library's
    reason, or refused (422) when the request asked for that.
    """
    samples: list[Sample] = []
    for spec in specs:
        for item in inputs:
            for sample_index in range(spec.samples):
                result = apply_perturbation(
                    spec.spec,
                    item.text,
                    item.text_pair,
                    seed=seed,
                    sample_index=sample_index,
                    lang=None if item.lang == UNDETERMINED else item.lang,
                    example_id=item.id,
                    on_unsupported="skip",
                )
                if result.skipped is not None and refuse_unsupported:
                    raise InvalidInput(
                        f"perturbations[{spec.index}] cannot handle inputs[{item.index}] "
                        f"(lang {item.lang}, script {item.script}): {result.skipped}. "
                        'Send "on_unsupported": "skip" to skip such inputs and report them'
                    )
                samples.append(
                    Sample(
                        spec=spec.index,
                        input=item.index,
                        sample_index=sample_index,
                        text=result.text,
                        text_pair=result.text_pair,
                        changed=result.changed,
                        skipped=result.skipped,
                    )
                )
    return tuple(samples)
