"""What a task kind provides: parsing rows, batching, a head, a loss and a metric.

The encoder is shared and carried over between phases; each task gets a fresh head built by its
kind. Kinds are stateless: everything task-specific lives in the TaskSpec they are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from training.tasks import Example, TaskSpec

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase


@dataclass
class StepOutput:
    """Per-example loss (summed by the loop, so uneven batches weigh correctly) and predictions."""

    losses: torch.Tensor
    predictions: list[Any]


class TaskKind(Protocol):
    name: str

    def parse(
        self,
        spec: TaskSpec,
        fields: Mapping[str, str],
        row: Mapping[str, Any],
        row_id: int,
        lang: str,
    ) -> Example: ...

    def collate(
        self,
        spec: TaskSpec,
        examples: Sequence[Example],
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
    ) -> dict[str, torch.Tensor]: ...

    def build_head(self, spec: TaskSpec, config: PretrainedConfig) -> nn.Module: ...

    def forward(
        self, encoder: nn.Module, head: nn.Module, batch: Mapping[str, torch.Tensor]
    ) -> StepOutput: ...

    def score(
        self, spec: TaskSpec, examples: Sequence[Example], predictions: Sequence[Any]
    ) -> float:
        """The task's primary metric (higher is better), used for checkpoint selection."""
        ...

    def texts(self, example: Example) -> tuple[str, str | None]:
        """The (text, text_pair) an input perturbation edits (adversarial augmentation)."""
        ...

    def with_texts(self, example: Example, text: str, text_pair: str | None) -> Example: ...
