"""Assemble a servable bundle from a Hugging Face sequence-classification checkpoint."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.bundle import (
    TOKENIZER_NAME,
    BundleManifest,
    Evaluation,
    ModelVariant,
    ParityReport,
    Provenance,
    Task,
    digest_file,
    write_manifest,
)
from export.features import BundleTokenizer, TextPair
from export.onnx_export import export_sequence_classifier

MODEL_NAME = "model.onnx"
# fp32 ONNX Runtime vs PyTorch differ only by kernel summation order: 1e-4 on logits is generous
# for correct graphs and far below any difference that could change a prediction's meaning.
FP32_LOGIT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class CheckpointInfo:
    labels: list[str]
    max_sequence_length: int


def read_checkpoint_info(checkpoint_dir: Path) -> CheckpointInfo:
    """Labels (in logit order) and usable sequence length from a checkpoint's config.json."""
    config = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    labels = [id2label[str(i)] for i in range(len(id2label))]
    # XLM-R reserves padding_idx + 1 = 2 positions: usable length is max_position_embeddings - 2.
    offset = config.get("pad_token_id", 1) + 1 if config.get("model_type") == "xlm-roberta" else 0
    max_length = int(config["max_position_embeddings"]) - offset
    return CheckpointInfo(labels=labels, max_sequence_length=max_length)


def check_parity(
    checkpoint_dir: Path,
    onnx_path: Path,
    tokenizer_path: Path,
    pairs: Sequence[TextPair],
    max_length: int,
    tolerance: float,
) -> ParityReport:
    """Compare ONNX Runtime logits with the PyTorch checkpoint on the same token ids."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    tokenizer = BundleTokenizer.from_file(
        tokenizer_path, max_length=max_length, input_names=graph_inputs
    )
    feeds = tokenizer.encode(pairs).feeds
    onnx_logits = session.run(None, feeds)[0]

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint_dir).eval()
    with torch.inference_mode():
        torch_logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()

    max_diff = float(np.max(np.abs(onnx_logits - torch_logits)))
    agreement = float(np.mean(onnx_logits.argmax(-1) == torch_logits.argmax(-1)))
    return ParityReport(
        reference=f"PyTorch checkpoint ({torch.__version__})",
        max_abs_logit_diff=max_diff,
        argmax_agreement=agreement,
        n_examples=len(pairs),
        tolerance=tolerance,
        passed=max_diff <= tolerance and agreement == 1.0,
    )


class ParityError(RuntimeError):
    """The exported graph disagrees with its checkpoint beyond tolerance; nothing is written."""


def build_bundle(
    checkpoint_dir: Path,
    bundle_dir: Path,
    *,
    name: str,
    version: str,
    task: Task,
    provenance: Provenance,
    parity_sample: Sequence[TextPair],
    evaluation: Sequence[Evaluation] = (),
) -> BundleManifest:
    """Export, parity-check and describe a checkpoint as a bundle in `bundle_dir`.

    The directory is assembled in a sibling staging folder and moved into place only when the
    parity check passes, so a failed export never leaves a half-written bundle behind.
    """
    if not parity_sample:
        raise ValueError("parity_sample must hold at least one input")
    info = read_checkpoint_info(checkpoint_dir)
    if len(info.labels) < 2:
        raise ValueError(f"{checkpoint_dir}/config.json has no id2label with at least two labels")
    tokenizer_source = checkpoint_dir / TOKENIZER_NAME
    if not tokenizer_source.is_file():
        raise FileNotFoundError(f"{tokenizer_source} is missing: save the tokenizer with the model")

    staging = bundle_dir.with_name(bundle_dir.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(tokenizer_source, staging / TOKENIZER_NAME)
        graph = export_sequence_classifier(checkpoint_dir, staging / MODEL_NAME)
        parity = check_parity(
            checkpoint_dir,
            graph.path,
            staging / TOKENIZER_NAME,
            parity_sample,
            info.max_sequence_length,
            FP32_LOGIT_TOLERANCE,
        )
        if not parity.passed:
            raise ParityError(
                f"fp32 ONNX graph disagrees with {checkpoint_dir}: max |logit diff| "
                f"{parity.max_abs_logit_diff:.2e} (tolerance {FP32_LOGIT_TOLERANCE:.0e}), argmax "
                f"agreement {parity.argmax_agreement:.3f}"
            )
        model_digest = digest_file(staging, MODEL_NAME)
        manifest = BundleManifest(
            name=name,
            version=version,
            task=task,
            labels=info.labels,
            max_sequence_length=info.max_sequence_length,
            inputs=graph.input_names,
            outputs=graph.output_names,
            opset=graph.opset,
            tokenizer=digest_file(staging, TOKENIZER_NAME),
            models=[ModelVariant(**model_digest.model_dump(), precision="fp32", parity=parity)],
            provenance=provenance.model_copy(update={"exporter": graph.exporter}),
            evaluation=list(evaluation),
        )
        write_manifest(staging, manifest)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        staging.rename(bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
