"""Extractive QA (SQuAD v1.1 and v2.0): predict the answer span's start and end tokens.

The question and context are encoded as a pair with only the context truncated to `max_length`
(one window per example, so each example keeps exactly one loss, as the loop's per-example
weighting requires). A gold answer that falls outside the window, and a v2.0 unanswerable
question, point at the first token (`<s>`), the usual "no answer" position. Predictions are
character spans of the context found through the tokenizer's offset mapping, so the metric scores
the context's own text. A task whose `metric` is `squad_v2` predicts "no answer" when the `<s>`
score beats the best span; a `squad` task always answers with its best span.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from training.kinds.base import StepOutput
from training.tasks import Example, TaskError, TaskSpec, field_value

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

# SQuAD's reference evaluation caps answers at 30 tokens; sub-tokens are shorter than words, so
# this is a little stricter than the reference but keeps the span search cheap.
MAX_ANSWER_TOKENS = 30
NO_ANSWER_METRIC = "squad_v2"

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, drop punctuation and English articles, squeeze spaces."""
    lowered = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", lowered).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Bag-of-tokens F1 after normalisation; an empty answer only matches an empty answer."""
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean exact match and F1, each the best over an example's gold answers ([] = unanswerable,
    scored against the empty answer)."""
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for prediction, answers in zip(predictions, golds, strict=True):
        options = list(answers) or [""]
        em += max(exact_match(prediction, a) for a in options)
        f1 += max(token_f1(prediction, a) for a in options)
    return {"exact_match": em / len(predictions), "f1": f1 / len(predictions)}


@dataclasses.dataclass(frozen=True)
class SpanPrediction:
    """The best span's characters `[start, end)` (None when the window has no context) and
    whether the no-answer position scored higher; only a v2.0 task acts on `no_answer`."""

    start: int | None
    end: int | None
    no_answer: bool


def answer_text(context: str, prediction: SpanPrediction, allow_none: bool) -> str:
    if prediction.start is None or prediction.end is None or (allow_none and prediction.no_answer):
        return ""
    return context[prediction.start : prediction.end]


@dataclasses.dataclass(frozen=True)
class Answers:
    texts: tuple[str, ...]
    starts: tuple[int, ...]


def _answers(raw: Any, context: str, where: str) -> Answers:
    if not isinstance(raw, Mapping) or "text" not in raw or "answer_start" not in raw:
        raise TaskError(f"{where}: answers must be {{'text': [...], 'answer_start': [...]}}")
    texts, starts = tuple(raw["text"]), tuple(int(s) for s in raw["answer_start"])
    if len(texts) != len(starts):
        raise TaskError(f"{where}: answers have {len(texts)} texts but {len(starts)} starts")
    for text, start in zip(texts, starts, strict=True):
        if context[start : start + len(text)] != text:
            raise TaskError(f"{where}: answer {text!r} is not at character {start} of the context")
    return Answers(texts, starts)


class ExtractiveQA:
    name = "extractive_qa"

    def parse(
        self,
        spec: TaskSpec,
        fields: Mapping[str, str],
        row: Mapping[str, Any],
        row_id: int,
        lang: str,
    ) -> Example:
        where = f"task {spec.name} id {row_id} ({lang})"
        question = field_value(row, fields, "question", where)
        context = field_value(row, fields, "context", where)
        if not isinstance(question, str) or not isinstance(context, str):
            raise TaskError(f"{where}: question and context must be strings")
        answers = _answers(field_value(row, fields, "answers", where), context, where)
        if not answers.texts and spec.metric != NO_ANSWER_METRIC:
            raise TaskError(f"{where}: no answer, but task {spec.name} has no unanswerable class")
        return Example(row_id, lang, {"question": question, "context": context}, answers)

    def collate(
        self,
        spec: TaskSpec,
        examples: Sequence[Example],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
    ) -> dict[str, torch.Tensor]:
        import torch

        if not tokenizer.is_fast:
            raise TaskError(f"task {spec.name}: extractive QA needs a fast tokenizer (offsets)")
        encoded = tokenizer(
            [e.features["question"] for e in examples],
            [e.features["context"] for e in examples],
            truncation="only_second",
            max_length=max_length,
            padding="longest",
            return_offsets_mapping=True,
            return_tensors="pt",
        )
        offsets = encoded["offset_mapping"]
        context_mask = torch.zeros_like(encoded["input_ids"], dtype=torch.bool)
        starts = torch.zeros(len(examples), dtype=torch.long)
        ends = torch.zeros(len(examples), dtype=torch.long)
        for row, example in enumerate(examples):
            in_context = [s == 1 for s in encoded.sequence_ids(row)]
            context_mask[row] = torch.tensor(in_context)
            answers: Answers = example.label
            if answers.texts:
                span = _token_span(
                    offsets[row].tolist(),
                    in_context,
                    answers.starts[0],
                    answers.starts[0] + len(answers.texts[0]),
                )
                if span is not None:
                    starts[row], ends[row] = span
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "offsets": offsets,
            "context_mask": context_mask,
            "start_positions": starts,
            "end_positions": ends,
        }

    def build_head(self, spec: TaskSpec, config: PretrainedConfig) -> nn.Module:
        from torch import nn

        return nn.Linear(config.hidden_size, 2)

    def forward(
        self, encoder: nn.Module, head: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> StepOutput:
        import torch
        from torch.nn import functional

        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        logits = head(hidden).float()
        # Only context tokens and <s> (the no-answer position) can be a span boundary.
        allowed = batch["context_mask"].clone()
        allowed[:, 0] = True
        lowest = torch.finfo(logits.dtype).min
        start_logits = logits[..., 0].masked_fill(~allowed, lowest)
        end_logits = logits[..., 1].masked_fill(~allowed, lowest)
        losses = (
            functional.cross_entropy(start_logits, batch["start_positions"], reduction="none")
            + functional.cross_entropy(end_logits, batch["end_positions"], reduction="none")
        ) / 2
        return StepOutput(losses, _best_spans(start_logits, end_logits, batch))

    def score(
        self, spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]
    ) -> float:
        """F1, the primary SQuAD metric (`scores` gives exact match too)."""
        return self.scores(spec, examples, predictions)["f1"]

    def scores(
        self, spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]
    ) -> dict[str, float]:
        allow_none = spec.metric == NO_ANSWER_METRIC
        texts = [
            answer_text(e.features["context"], p, allow_none)
            for e, p in zip(examples, predictions, strict=True)
        ]
        return squad_scores(texts, [e.label.texts for e in examples])

    def texts(self, example: Example) -> tuple[str, str | None]:
        # Only the question is perturbed: editing the context would move the answer's offsets.
        return example.features["question"], None

    def with_texts(self, example: Example, text: str, text_pair: str | None) -> Example:
        return dataclasses.replace(example, features={**example.features, "question": text})


def _token_span(
    offsets: Sequence[Sequence[int]], in_context: Sequence[bool], start: int, end: int
) -> tuple[int, int] | None:
    """First and last context tokens covering characters [start, end), or None when the window
    does not contain the whole answer."""
    first = last = None
    for position, ((token_start, token_end), inside) in enumerate(
        zip(offsets, in_context, strict=True)
    ):
        if not inside or token_end <= token_start:
            continue
        if first is None and token_end > start:
            first = position
        if token_start < end:
            last = position
    if first is None or last is None or last < first:
        return None
    if offsets[first][0] > start or offsets[last][1] < end:
        return None
    return first, last


def _best_spans(
    start_logits: torch.Tensor, end_logits: torch.Tensor, batch: Mapping[str, torch.Tensor]
) -> list[SpanPrediction]:
    """Per example the highest-scoring context span (start <= end, at most MAX_ANSWER_TOKENS)
    as character offsets, and whether <s> (no answer) beats it."""
    import torch

    length = start_logits.shape[-1]
    positions = torch.arange(length, device=start_logits.device)
    band = (positions[None, :] >= positions[:, None]) & (
        positions[None, :] - positions[:, None] < MAX_ANSWER_TOKENS
    )
    context = batch["context_mask"]
    valid = band[None] & context[:, :, None] & context[:, None, :]
    pair = (start_logits[:, :, None] + end_logits[:, None, :]).masked_fill(~valid, float("-inf"))
    best = pair.view(pair.shape[0], -1).max(dim=-1)
    null = start_logits[:, 0] + end_logits[:, 0]
    spans: list[SpanPrediction] = []
    for row in range(pair.shape[0]):
        score, flat = float(best.values[row]), int(best.indices[row])
        if score == float("-inf"):
            spans.append(SpanPrediction(None, None, no_answer=True))
            continue
        first, last = divmod(flat, length)
        offsets = batch["offsets"][row]
        spans.append(
            SpanPrediction(
                int(offsets[first][0]), int(offsets[last][1]), no_answer=float(null[row]) > score
            )
        )
    return spans
