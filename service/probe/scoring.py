"""One model's view of a plan: which samples it can see at all, and its predictions. Pure.

A sample is a no-op for a model when the model's tokenizer turns it into exactly the token ids of
the clean input: normalisation (NFKC folds fullwidth letters), pre-tokenisation (runs of spaces)
and truncation (an edit past the max length) can all erase an edit. Comparing the ids of the
whole encoded pair is what the model sees, so it catches all three; no-ops are reported and
never sent to the model, so they cannot pass for robust predictions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from export.features import BundleTokenizer, TextPair

from service.probe.plan import ProbePlan
from service.schemas import Prediction

TokenIds = tuple[int, ...]


@dataclass(frozen=True)
class Scored:
    label: str
    probabilities: tuple[float, ...]  # in the model's label order


@dataclass(frozen=True)
class ModelRun:
    labels: tuple[str, ...]
    clean: tuple[Scored, ...]  # per input
    # Per sample of the plan (or of a prefix of it); None when skipped or a no-op.
    perturbed: tuple[Scored | None, ...]
    noop: tuple[bool, ...]

    def label_index(self, label: str) -> int:
        return self.labels.index(label)


def token_ids(tokenizer: BundleTokenizer, pairs: Sequence[TextPair], chunk: int) -> list[TokenIds]:
    """The unpadded input ids the model would get for each pair (padding is on the right)."""
    ids: list[TokenIds] = []
    for start in range(0, len(pairs), chunk):
        batch = tokenizer.encode(pairs[start : start + chunk])
        ids.extend(
            tuple(int(i) for i in row[:length])
            for row, length in zip(batch.feeds["input_ids"], batch.num_tokens, strict=True)
        )
    return ids


def noop_flags(
    plan: ProbePlan, encode: Callable[[Sequence[TextPair]], list[TokenIds]]
) -> tuple[bool, ...]:
    """Per sample: True when the model would see the clean input's exact token ids."""
    clean_ids = encode([item.pair for item in plan.inputs])
    edited = [i for i, s in enumerate(plan.samples) if s.skipped is None and s.changed]
    edited_ids = dict(zip(edited, encode([plan.samples[i].pair for i in edited]), strict=True))
    return tuple(
        sample.skipped is None and (i not in edited_ids or edited_ids[i] == clean_ids[sample.input])
        for i, sample in enumerate(plan.samples)
    )


def visible(plan: ProbePlan, noop: Sequence[bool], samples: Iterable[int]) -> list[int]:
    """The samples among `samples` the model must score: neither skipped nor a no-op."""
    return [i for i in samples if plan.samples[i].skipped is None and not noop[i]]


def evaluations(plan: ProbePlan, noop: Sequence[bool]) -> int:
    """Model evaluations the plan costs this model: clean inputs plus visible samples."""
    return len(plan.inputs) + len(visible(plan, noop, range(len(plan.samples))))


def scored(prediction: Prediction, labels: Sequence[str]) -> Scored:
    return Scored(prediction.label, tuple(prediction.probabilities[label] for label in labels))
