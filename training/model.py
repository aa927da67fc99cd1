"""The shared encoder with one head per task, and the checkpoint [Export] reads.

The encoder is carried from phase to phase; heads are fresh per phase. The target phase is saved
as `XLMRobertaForSequenceClassification` (encoder under `roberta.`, head under `classifier.`), the
architecture the export path and the service already trust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import XLMRobertaForSequenceClassification

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
    """The tokenizer saved beside `source`, as `AutoTokenizer` loads it.

    `fix_mistral_regex=False` is explicit because transformers 4.57.3-4.57.x warns that any local
    tokenizer whose config.json was written by those versions has Mistral's broken pre-tokenizer
    regex (its check ignores the model type there). XLM-R's Unigram tokenizer has no such regex, so
    the warning is false and leaving the flag unset would print it on every load.
    """
    tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
        str(source), fix_mistral_regex=False
    )
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


# Every attention projection and both feed-forward matrices: in XLM-R these are all the Linear
# layers called query/key/value/dense.
LORA_TARGETS = ("query", "key", "value", "dense")
ADAPTERS_DIR = "adapters"


def _wrap_lora(encoder: PreTrainedModel, rank: int) -> PeftModel:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=list(LORA_TARGETS)
    )
    return get_peft_model(encoder, config)


def add_lora(encoder: PreTrainedModel, rank: int) -> PreTrainedModel:
    """Wrap the encoder's projections in rank-`rank` adapters; the rest of the encoder freezes
    (task heads live outside it and keep training in full)."""
    # The peft wrapper forwards calls and attributes (config, embeddings) to the model it wraps.
    return cast(PreTrainedModel, _wrap_lora(encoder, rank))


def merge_lora(model: MultiTaskModel) -> dict[str, torch.Tensor] | None:
    """Fold adapters into the encoder's weights (what evaluation, export and serving see); returns
    the adapter weights, or None when the encoder trained in full."""
    from peft import PeftModel, get_peft_model_state_dict

    if not isinstance(model.encoder, PeftModel):
        return None
    adapter = {
        name: value.detach().to("cpu", copy=True)
        for name, value in get_peft_model_state_dict(model.encoder).items()
    }
    model.encoder = cast(PreTrainedModel, model.encoder.merge_and_unload())
    return adapter


def apply_lora(
    encoder: PreTrainedModel, adapter: Mapping[str, torch.Tensor], rank: int
) -> PreTrainedModel:
    """The inverse of training with `add_lora` then `merge_lora`: the encoder with `adapter`
    merged in."""
    from peft import set_peft_model_state_dict

    wrapped = _wrap_lora(encoder, rank)
    # peft annotates this as a bare namedtuple; it is torch's (missing_keys, unexpected_keys).
    result: Any = set_peft_model_state_dict(wrapped, dict(adapter))
    if result.unexpected_keys:
        raise ValueError(f"adapter has weights this encoder lacks: {result.unexpected_keys[:5]}")
    missing = [name for name in result.missing_keys if "lora_" in name]
    if missing:
        raise ValueError(f"adapter lacks weights for {len(missing)} LoRA matrices: {missing[:3]}")
    return cast(PreTrainedModel, wrapped.merge_and_unload())


def save_adapter(
    adapter: Mapping[str, torch.Tensor],
    out_dir: Path,
    phase: str,
    rank: int,
    head: nn.Module | None = None,
) -> Path:
    """`<phase>.safetensors` (adapter weights under `lora.`, the head under `head.`) plus its rank:
    the few megabytes that, with the base encoder, rebuild the phase's model."""
    from safetensors.torch import save_file

    tensors = {f"lora.{name}": value.contiguous() for name, value in adapter.items()}
    if head is not None:
        tensors |= {
            f"head.{name}": value.detach().cpu() for name, value in head.state_dict().items()
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{phase}.safetensors"
    save_file(tensors, str(path), metadata={"rank": str(rank), "targets": ",".join(LORA_TARGETS)})
    return path


def save_encoder(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path
) -> None:
    encoder.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def build_classifier(
    encoder: PreTrainedModel, head: nn.Module | Mapping[str, torch.Tensor], labels: Sequence[str]
) -> XLMRobertaForSequenceClassification:
    """The encoder and a classification head (module or its weights) as one
    `XLMRobertaForSequenceClassification`."""
    from transformers import XLMRobertaForSequenceClassification

    config = AutoConfig.for_model(
        "xlm-roberta",
        **{
            k: v
            for k, v in encoder.config.to_dict().items()
            if k not in {"model_type", "architectures", "id2label", "label2id", "num_labels"}
        },
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        architectures=["XLMRobertaForSequenceClassification"],
    )
    classifier = XLMRobertaForSequenceClassification(config)  # type: ignore[no-untyped-call]
    classifier.roberta.load_state_dict(encoder.state_dict())
    classifier.classifier.load_state_dict(head if isinstance(head, Mapping) else head.state_dict())
    return classifier


def write_classifier(
    classifier: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    run_manifest: Mapping[str, Any],
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    classifier.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / RUN_MANIFEST).write_text(json.dumps(run_manifest, indent=2, sort_keys=True) + "\n")
    return out_dir


def save_classifier(
    model: MultiTaskModel,
    task: str,
    spec: TaskSpec,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: Path,
    run_manifest: Mapping[str, Any],
) -> Path:
    """Write the target phase as a sequence-classification checkpoint plus the run manifest."""
    classifier = build_classifier(model.encoder, model.heads[task], spec.labels)
    return write_classifier(classifier, tokenizer, out_dir, run_manifest)


def copy_adapter(source: Path, dest: Path, lora_dtype: str) -> Path:
    """`save_adapter`'s file with its LoRA matrices stored as `lora_dtype` ("float32" or
    "float16"); the head stays as trained (it is small, and rounding it moves every logit)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dtype = {"float32": torch.float32, "float16": torch.float16}[lora_dtype]
    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    stored = {
        name: value.to(dtype) if name.startswith("lora.") else value
        for name, value in tensors.items()
    }
    save_file(stored, str(dest), metadata=metadata)
    return dest


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """(adapter weights, head weights (empty for an intermediate phase), rank) of `save_adapter`'s file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        rank = int(f.metadata()["rank"])
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    # Adapters may be stored in float16 (`copy_adapter`); they merge into a float32 encoder.
    lora = {k.removeprefix("lora."): v.float() for k, v in tensors.items() if k.startswith("lora.")}
    head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    return lora, head, rank
