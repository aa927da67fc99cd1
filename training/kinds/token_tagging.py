"""Token tagging (POS, NER, CCG supertags): one label per word of a pre-tokenised sentence.

Each word's label goes on its first sub-token; the other sub-tokens and the special tokens get
-100, which the loss ignores. A sentence's loss is the mean over its labelled words, so long and
short sentences weigh alike in the loop's per-example average. Words cut off by `max_length` are
predicted as -1 and count as errors. The metric is token accuracy, or entity-level F1 over BIO
spans (CoNLL style) when the task's `metric` is `entity_f1`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from training.kinds.base import StepOutput
from training.tasks import Example, TaskError, TaskSpec, field_value

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

IGNORE = -100
ENTITY_F1 = "entity_f1"


def token_accuracy(golds: Sequence[Sequence[int]], predictions: Sequence[Sequence[int]]) -> float:
    total = correct = 0
    for gold, predicted in zip(golds, predictions, strict=True):
        total += len(gold)
        correct += sum(int(g == p) for g, p in zip(gold, predicted, strict=True))
    return correct / total if total else 0.0


def bio_spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """(start, end-exclusive, type) entity spans; an I- tag that does not continue a span of its
    type starts one (conlleval's reading), and anything that is not B-/I- ends the open span."""
    spans: set[tuple[int, int, str]] = set()
    start: int | None = None
    kind = ""
    for position, tag in enumerate([*tags, "O"]):
        prefix, _, entity = tag.partition("-")
        continues = prefix == "I" and start is not None and entity == kind
        if start is not None and not continues:
            spans.add((start, position, kind))
            start = None
        if prefix in {"B", "I"} and entity and not continues:
            start, kind = position, entity
    return spans


def entity_f1(golds: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> float:
    """Micro-averaged F1 over exact (start, end, type) matches across all sentences."""
    tp = fp = fn = 0
    for gold, predicted in zip(golds, predictions, strict=True):
        expected, found = bio_spans(gold), bio_spans(predicted)
        tp += len(expected & found)
        fp += len(found - expected)
        fn += len(expected - found)
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 1.0


class TokenTagging:
    name = "token_tagging"

    def parse(
        self,
        spec: TaskSpec,
        fields: Mapping[str, str],
        row: Mapping[str, Any],
        row_id: int,
        lang: str,
    ) -> Example:
        where = f"task {spec.name} id {row_id} ({lang})"
        tokens = field_value(row, fields, "tokens", where)
        tags = field_value(row, fields, "tags", where)
        if not isinstance(tokens, list | tuple) or not all(isinstance(t, str) for t in tokens):
            raise TaskError(f"{where}: tokens must be a list of strings")
        if not isinstance(tags, list | tuple) or len(tags) != len(tokens):
            raise TaskError(f"{where}: tags must be a list as long as tokens ({len(tokens)})")
        if not tokens:
            raise TaskError(f"{where}: empty sentence")
        labels = tuple(spec.label_index(tag) for tag in tags)
        return Example(row_id, lang, {"tokens": tuple(tokens)}, labels)

    def collate(
        self,
        spec: TaskSpec,
        examples: Sequence[Example],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
    ) -> dict[str, torch.Tensor]:
        import torch

        if not tokenizer.is_fast:
            raise TaskError(f"task {spec.name}: token tagging needs a fast tokenizer (word ids)")
        encoded = tokenizer(
            [list(e.features["tokens"]) for e in examples],
            is_split_into_words=True,
            truncation=True,
            max_length=max_length,
            padding="longest",
            return_tensors="pt",
        )
        labels = torch.full_like(encoded["input_ids"], IGNORE)
        word_index = torch.full_like(encoded["input_ids"], -1)
        for row, example in enumerate(examples):
            previous = None
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None and word != previous:
                    labels[row, position] = example.label[word]
                    word_index[row, position] = word
                previous = word
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": labels,
            "word_index": word_index,
            "num_words": torch.tensor([len(e.features["tokens"]) for e in examples]),
        }

    def build_head(self, spec: TaskSpec, config: PretrainedConfig) -> nn.Module:
        from torch import nn

        return nn.Sequential(
            nn.Dropout(config.hidden_dropout_prob), nn.Linear(config.hidden_size, len(spec.labels))
        )

    def forward(
        self, encoder: nn.Module, head: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> StepOutput:
        from torch.nn import functional

        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        logits = head(hidden).float()
        labels = batch["labels"]
        per_token = functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
        )
        counts = (labels != IGNORE).sum(dim=1).clamp(min=1)
        losses = per_token.sum(dim=1) / counts
        best = logits.argmax(dim=-1)
        predictions: list[list[int]] = []
        for row in range(best.shape[0]):
            words = [-1] * int(batch["num_words"][row])
            for position in (batch["word_index"][row] >= 0).nonzero().flatten().tolist():
                words[int(batch["word_index"][row, position])] = int(best[row, position])
            predictions.append(words)
        return StepOutput(losses, predictions)

    def score(
        self, spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]
    ) -> float:
        golds = [list(e.label) for e in examples]
        if spec.metric != ENTITY_F1:
            return token_accuracy(golds, predictions)

        def names(indices: Sequence[int]) -> list[str]:
            # A truncated word (-1) has no tag: "O" ends any span it would have continued.
            return [spec.labels[i] if i >= 0 else "O" for i in indices]

        return entity_f1([names(g) for g in golds], [names(p) for p in predictions])

    def texts(self, example: Example) -> tuple[str, str | None]:
        return " ".join(example.features["tokens"]), None

    def with_texts(self, example: Example, text: str, text_pair: str | None) -> Example:
        words = tuple(text.split(" "))
        if len(words) != len(example.features["tokens"]) or not all(words):
            # A perturbation that merged or split words would misalign every later tag.
            return example
        return dataclasses.replace(example, features={"tokens": words})
