"""The shared encoder with one head per task, and the checkpoint [Export] reads.

The encoder is carried from phase to phase; heads are fresh per phase. The target phase is saved
as `XLMRobertaForSequenceClassification` (encoder under `roberta.`, head under `classifier.`), the
architecture the export path and the service already trust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.kinds import TaskKind, get_kind
from training.tasks import TaskSpec

RUN_MANIFEST = "polyprobe_run.json"


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: PreTrainedModel, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.encoder: PreTrainedModel = encoder
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, task: str, batch: Mapping[str, torch.Tensor], kind: TaskKind) -> torch.Tensor:
        """Per-example training losses of one task's batch (the call DDP wraps)."""
        return kind.forward(self.encoder, self.heads[task], batch).losses


def load_encoder(source: str | Path) -> PreTrainedModel:
    """An XLM-R-family encoder without pooler, from a hub id, a base checkpoint or a phase output."""
    encoder: PreTrainedModel = AutoModel.from_pretrained(str(source), add_pooling_layer=False)
    return encoder


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(str(source))  # type: ignore[no-untyped-call]
    return tokenizer


def build_model(encoder: PreTrainedModel, specs: Mapping[str, TaskSpec]) -> MultiTaskModel:
    config = encoder.config
    heads = {name: get_kind(spec.kind).build_head(spec, config) for name, spec in specs.items()}
    return MultiTaskModel(encoder, heads)


def freeze_word_embeddings(encoder: PreTrainedModel) -> int:
    """Freeze the vocabulary matrix (most of a multilingual encoder's parameters): keeps every
    language's embeddings where pre-training put them and makes small-data steps much faster."""
    weight = encoder.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    weight.requires_grad_(False)
    return int(weight.numel())


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters that train (the frozen embeddings never change, so resumes and
    best-checkpoint snapshots leave them out)."""
    return {
        name: param.detach().to("cpu", copy=True)
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def load_trainable_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise ValueError(f"saved state has parameters this model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def save_encoder(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path
) -> None:
    encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def save_classifier(
    model: MultiTaskModel,
    task: str,
    spec: TaskSpec,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    run_manifest: Mapping[str, Any],
) -> Path:
    """Write the target phase as a sequence-classification checkpoint plus the run manifest."""
    from transformers import XLMRobertaForSequenceClassification

    encoder_config = model.encoder.config
    config = AutoConfig.for_model(
        "xlm-roberta",
        **{
            k: v
            for k, v in encoder_config.to_dict().items()
            if k not in {"model_type", "architectures", "id2label", "label2id", "num_labels"}
        },
        num_labels=len(spec.labels),
        id2label=dict(enumerate(spec.labels)),
        label2id={label: i for i, label in enumerate(spec.labels)},
        architectures=["XLMRobertaForSequenceClassification"],
    )
    classifier = XLMRobertaForSequenceClassification(config)  # type: ignore[no-untyped-call]
    classifier.roberta.load_state_dict(model.encoder.state_dict())
    classifier.classifier.load_state_dict(model.heads[task].state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    classifier.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / RUN_MANIFEST).write_text(json.dumps(run_manifest, indent=2, sort_keys=True) + "\n")
    return out_dir
