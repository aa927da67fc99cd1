"""Single-text and text-pair classification (PAWS-X, XNLI, MNLI, QQP, SST-2...).

The head is XLM-R's own classification head on the first token, so the final checkpoint is a
plain `XLMRobertaForSequenceClassification` that [Export] and the service understand.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from training.kinds.base import StepOutput
from training.tasks import Example, TaskSpec, field_value

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


class Classification:
    name = "classification"

    def parse(
        self,
        spec: TaskSpec,
        fields: Mapping[str, str],
        row: Mapping[str, Any],
        row_id: int,
        lang: str,
    ) -> Example:
        where = f"task {spec.name} id {row_id} ({lang})"
        text = field_value(row, fields, "text", where)
        pair = field_value(row, fields, "text_pair", where) if "text_pair" in fields else None
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            raise ValueError(f"{where}: text fields must be strings")
        label = spec.label_index(field_value(row, fields, "label", where))
        return Example(row_id, lang, {"text": text, "text_pair": pair}, label)

    def collate(
        self,
        spec: TaskSpec,
        examples: Sequence[Example],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
    ) -> dict[str, torch.Tensor]:
        import torch

        texts = [e.features["text"] for e in examples]
        pairs = [e.features["text_pair"] for e in examples]
        encoded = tokenizer(
            texts,
            pairs if any(p is not None for p in pairs) else None,
            truncation=True,
            max_length=max_length,
            padding="longest",
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": torch.tensor([e.label for e in examples], dtype=torch.long),
        }

    def build_head(self, spec: TaskSpec, config: PretrainedConfig) -> nn.Module:
        from transformers.models.xlm_roberta.modeling_xlm_roberta import (
            XLMRobertaClassificationHead,
        )

        head_config = copy.deepcopy(config)
        head_config.num_labels = len(spec.labels)
        return XLMRobertaClassificationHead(head_config)  # type: ignore[no-untyped-call]

    def forward(
        self, encoder: nn.Module, head: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> StepOutput:
        from torch.nn import functional

        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
        logits = head(hidden)
        losses = functional.cross_entropy(logits, batch["labels"], reduction="none")
        return StepOutput(losses, logits.argmax(dim=-1).tolist())

    def score(
        self, spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]
    ) -> float:
        if not examples:
            return 0.0
        return sum(int(p == e.label) for p, e in zip(predictions, examples, strict=True)) / len(
            examples
        )

    def texts(self, example: Example) -> tuple[str, str | None]:
        return example.features["text"], example.features["text_pair"]

    def with_texts(self, example: Example, text: str, text_pair: str | None) -> Example:
        return dataclasses.replace(example, features={"text": text, "text_pair": text_pair})
