"""Multiple choice (HellaSwag, CosmosQA, CommonsenseQA): a context and N candidate answers.

Each (context, choice) pair is encoded separately; a linear layer on each pair's first-token state
gives one score per choice and the softmax over choices is the prediction. Choice counts may differ
between examples: missing choices are padded and masked out of the softmax.
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


def _columns(row: Mapping[str, Any], fields: Mapping[str, str], name: str, where: str) -> list[Any]:
    """A field may name several columns joined by `+` (CosmosQA's `context+question`,
    `answer0+answer1+answer2+answer3`); each is looked up like a single field."""
    spec = fields.get(name, name)
    return [field_value(row, {name: column}, name, where) for column in spec.split("+")]


def _choices(values: list[Any], where: str) -> tuple[str, ...]:
    if len(values) > 1:
        choices: list[Any] = values
    elif isinstance(values[0], Mapping) and "text" in values[0]:
        # CommonsenseQA stores {"label": ["A", ...], "text": [...]}.
        choices = list(values[0]["text"])
    elif isinstance(values[0], list | tuple):
        choices = list(values[0])
    else:
        raise TaskError(f"{where}: choices must be a list, a {{'text': [...]}} mapping or columns")
    if len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise TaskError(f"{where}: need at least two string choices, got {choices!r}")
    return tuple(choices)


def choice_index(raw: Any, count: int, where: str) -> int:
    """The gold choice: an index (int or digit string) or a letter key (CommonsenseQA's "A".."E")."""
    if isinstance(raw, bool):
        raise TaskError(f"{where}: label {raw!r} is not a choice index")
    if isinstance(raw, str) and raw.isdigit():
        raw = int(raw)
    elif isinstance(raw, str) and len(raw) == 1 and raw.isalpha():
        raw = ord(raw.upper()) - ord("A")
    if not isinstance(raw, int) or not 0 <= raw < count:
        raise TaskError(f"{where}: label {raw!r} is not a choice among {count}")
    return raw


class MultipleChoice:
    name = "multiple_choice"

    def parse(
        self,
        spec: TaskSpec,
        fields: Mapping[str, str],
        row: Mapping[str, Any],
        row_id: int,
        lang: str,
    ) -> Example:
        where = f"task {spec.name} id {row_id} ({lang})"
        context_parts = _columns(row, fields, "context", where)
        if not all(isinstance(p, str) for p in context_parts):
            raise TaskError(f"{where}: context fields must be strings")
        choices = _choices(_columns(row, fields, "choices", where), where)
        label = choice_index(field_value(row, fields, "label", where), len(choices), where)
        context = " ".join(p.strip() for p in context_parts if p.strip())
        return Example(row_id, lang, {"context": context, "choices": choices}, label)

    def collate(
        self,
        spec: TaskSpec,
        examples: Sequence[Example],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
    ) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(e.features["choices"]) for e in examples)
        contexts: list[str] = []
        candidates: list[str] = []
        mask = torch.zeros(len(examples), width, dtype=torch.bool)
        for row, example in enumerate(examples):
            choices = example.features["choices"]
            mask[row, : len(choices)] = True
            for column in range(width):
                contexts.append(example.features["context"])
                # Padding choices are encoded (to keep the tensor rectangular) and masked below.
                candidates.append(choices[column] if column < len(choices) else "")
        encoded = tokenizer(
            contexts,
            candidates,
            truncation="only_first",
            max_length=max_length,
            padding="longest",
            return_tensors="pt",
        )
        length = encoded["input_ids"].shape[-1]
        return {
            "input_ids": encoded["input_ids"].view(len(examples), width, length),
            "attention_mask": encoded["attention_mask"].view(len(examples), width, length),
            "choice_mask": mask,
            "labels": torch.tensor([e.label for e in examples], dtype=torch.long),
        }

    def build_head(self, spec: TaskSpec, config: PretrainedConfig) -> nn.Module:
        from torch import nn

        return nn.Sequential(
            nn.Dropout(config.hidden_dropout_prob), nn.Linear(config.hidden_size, 1)
        )

    def forward(
        self, encoder: nn.Module, head: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> StepOutput:
        from torch.nn import functional

        batch_size, width, length = batch["input_ids"].shape
        hidden = encoder(
            input_ids=batch["input_ids"].view(-1, length),
            attention_mask=batch["attention_mask"].view(-1, length),
        )[0]
        logits = head(hidden[:, 0]).view(batch_size, width)
        logits = logits.masked_fill(~batch["choice_mask"], float("-inf"))
        losses = functional.cross_entropy(logits.float(), batch["labels"], reduction="none")
        return StepOutput(losses, logits.argmax(dim=-1).tolist())

    def score(
        self, spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]
    ) -> float:
        if not examples:
            return 0.0
        correct = sum(int(p == e.label) for p, e in zip(predictions, examples, strict=True))
        return correct / len(examples)

    def texts(self, example: Example) -> tuple[str, str | None]:
        # Only the context is perturbed: the choices are what the model discriminates between.
        return example.features["context"], None

    def with_texts(self, example: Example, text: str, text_pair: str | None) -> Example:
        return dataclasses.replace(example, features={**example.features, "context": text})
