"""Assemble a servable bundle from a Hugging Face sequence-classification checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.bundle import (
    TOKENIZER_NAME,
    BundleManifest,
    Evaluation,
    ModelVariant,
    ParityReport,
    Precision,
    Provenance,
    Task,
    digest_file,
    write_manifest,
)
from export.features import BundleTokenizer, TextPair
from export.onnx_export import export_sequence_classifier

logger = logging.getLogger(__name__)

MODEL_NAME = "model.onnx"
OPTIMIZED_MODEL_NAME = "model.optimized.onnx"
INT8_MODEL_NAME = "model.int8.onnx"
# fp32 ONNX Runtime vs PyTorch differ only by kernel summation order: 1e-4 on logits is generous
# for correct graphs and far below any difference that could change a prediction's meaning. The
# fused (optimised) fp32 graph computes the same function, so it is held to the same tolerance.
FP32_LOGIT_TOLERANCE = 1e-4
# Dynamic int8 rounds every weight and activation, so logits move by far more than 1e-4; what must
# survive is the decision. 0.98 allows one flip in fifty on a borderline pair; the logit limit is
# only a guard against a graph that agrees on argmax by luck while its logits are nonsense.
INT8_MIN_ARGMAX_AGREEMENT = 0.98
INT8_LOGIT_TOLERANCE = 1.0


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


def reference_logits(checkpoint_dir: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """The PyTorch checkpoint's logits on exactly these feeds, and a name for the reference."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint_dir).eval()
    with torch.inference_mode():
        logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    return logits, f"PyTorch checkpoint ({torch.__version__})"


def onnx_logits(
    onnx_path: Path, tokenizer_path: Path, pairs: Sequence[TextPair], max_length: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """ONNX Runtime logits of a graph on the pairs, encoded by the bundle's own tokenizer."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in session.get_inputs()]
    tokenizer = BundleTokenizer.from_file(
        tokenizer_path, max_length=max_length, input_names=graph_inputs
    )
    feeds = tokenizer.encode(pairs).feeds
    return np.asarray(session.run(None, feeds)[0]), feeds


def compare_logits(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    reference_name: str,
    tolerance: float,
    min_argmax_agreement: float = 1.0,
) -> ParityReport:
    """Max |logit diff| and argmax agreement of a variant against the reference logits."""
    max_diff = float(np.max(np.abs(candidate - reference)))
    agreement = float(np.mean(candidate.argmax(-1) == reference.argmax(-1)))
    return ParityReport(
        reference=reference_name,
        max_abs_logit_diff=max_diff,
        argmax_agreement=agreement,
        n_examples=len(reference),
        tolerance=tolerance,
        passed=max_diff <= tolerance and agreement >= min_argmax_agreement,
    )


def check_parity(
    checkpoint_dir: Path,
    onnx_path: Path,
    tokenizer_path: Path,
    pairs: Sequence[TextPair],
    max_length: int,
    tolerance: float,
    min_argmax_agreement: float = 1.0,
) -> ParityReport:
    """Compare ONNX Runtime logits with the PyTorch checkpoint on the same token ids."""
    candidate, feeds = onnx_logits(onnx_path, tokenizer_path, pairs, max_length)
    reference, reference_name = reference_logits(checkpoint_dir, feeds)
    return compare_logits(
        candidate,
        reference,
        reference_name=reference_name,
        tolerance=tolerance,
        min_argmax_agreement=min_argmax_agreement,
    )


class ParityError(RuntimeError):
    """The exported graph disagrees with its checkpoint beyond tolerance; nothing is written."""


@dataclass(frozen=True)
class CpuVariants:
    """Which CPU variants to try beside the plain fp32 export, and the gates they must pass.

    A fused graph that passes replaces the plain export as the bundle's fp32 variant (a bundle holds
    one file per precision); int8 is quantized from whichever fp32 graph won.
    """

    optimize: bool = False
    int8: bool = False
    keep_word_embeddings_fp32: bool = True
    fp32_tolerance: float = FP32_LOGIT_TOLERANCE
    int8_tolerance: float = INT8_LOGIT_TOLERANCE
    int8_min_argmax_agreement: float = INT8_MIN_ARGMAX_AGREEMENT


@dataclass(frozen=True)
class RejectedVariant:
    name: str
    reason: str
    parity: ParityReport | None = None


@dataclass(frozen=True)
class BuildResult:
    manifest: BundleManifest
    rejected: list[RejectedVariant] = field(default_factory=list)


@dataclass(frozen=True)
class ModelShape:
    num_heads: int
    hidden_size: int


def read_model_shape(checkpoint_dir: Path) -> ModelShape:
    """Attention heads and hidden size the ORT transformer optimiser needs to fuse attention."""
    config = json.loads((checkpoint_dir / "config.json").read_text(encoding="utf-8"))
    return ModelShape(
        num_heads=int(config["num_attention_heads"]), hidden_size=int(config["hidden_size"])
    )


def optimize_fp32(source: Path, target: Path, shape: ModelShape) -> str:
    """Fuse attention/LayerNorm/GELU with the ORT transformer optimiser; returns a description."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(source), model_type="bert", num_heads=shape.num_heads, hidden_size=shape.hidden_size
    )
    optimized.save_model_to_file(str(target))
    fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    return (
        f"onnxruntime.transformers optimize_model bert (num_heads={shape.num_heads}, "
        f"hidden_size={shape.hidden_size}); fused {fused}"
    )


_EMBEDDING_LOOKUPS = frozenset({"Gather", "EmbedLayerNormalization"})


def word_embedding_nodes(model_path: Path) -> list[str]:
    """Nodes that look up `input_ids` in a weight table: the word embeddings (plain or fused)."""
    import onnx

    model = onnx.load(str(model_path))
    weights = {init.name for init in model.graph.initializer}
    return [
        node.name
        for node in model.graph.node
        if node.op_type in _EMBEDDING_LOOKUPS
        and "input_ids" in node.input
        and weights.intersection(node.input)
    ]


def quantize_int8(source: Path, target: Path, *, keep_word_embeddings_fp32: bool) -> str:
    """Dynamic int8 (QInt8 weights, activations quantized at run time); returns a description."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = word_embedding_nodes(source) if keep_word_embeddings_fp32 else []
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
        # ONNX shape inference cannot type the outputs of ORT's fused contrib ops (Attention,
        # SkipLayerNormalization); everything in these graphs is float, so say so.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    kept = f"word embeddings kept fp32 ({', '.join(excluded)})" if excluded else "all quantized"
    return f"onnxruntime.quantization quantize_dynamic QInt8 weights; {kept}"


def _rejection(name: str, parity: ParityReport, min_agreement: float) -> RejectedVariant:
    reason = (
        f"{name} failed its parity gate: max |logit diff| {parity.max_abs_logit_diff:.2e} "
        f"(limit {parity.tolerance:.0e}), argmax agreement {parity.argmax_agreement:.3f} "
        f"(minimum {min_agreement:.2f}) on {parity.n_examples} examples"
    )
    logger.warning("not writing %s", reason)
    return RejectedVariant(name=name, reason=reason, parity=parity)


def _variant(
    staging: Path, path: str, precision: Precision, parity: ParityReport, optimization: str | None
) -> ModelVariant:
    return ModelVariant(
        **digest_file(staging, path).model_dump(),
        precision=precision,
        optimization=optimization,
        parity=parity,
    )


def _cpu_variants(
    staging: Path,
    checkpoint_dir: Path,
    base: ModelVariant,
    parity_sample: Sequence[TextPair],
    max_length: int,
    options: CpuVariants,
) -> tuple[list[ModelVariant], list[RejectedVariant]]:
    """Build, gate and keep (or delete) the optional variants; the first model is the fp32 one."""
    tokenizer_path = staging / TOKENIZER_NAME
    fp32 = base
    rejected: list[RejectedVariant] = []

    def gate(path: str, tolerance: float, min_agreement: float) -> ParityReport:
        candidate, feeds = onnx_logits(staging / path, tokenizer_path, parity_sample, max_length)
        reference, reference_name = reference_logits(checkpoint_dir, feeds)
        return compare_logits(
            candidate,
            reference,
            reference_name=reference_name,
            tolerance=tolerance,
            min_argmax_agreement=min_agreement,
        )

    if options.optimize:
        how = optimize_fp32(
            staging / MODEL_NAME, staging / OPTIMIZED_MODEL_NAME, read_model_shape(checkpoint_dir)
        )
        parity = gate(OPTIMIZED_MODEL_NAME, options.fp32_tolerance, 1.0)
        if parity.passed:
            fp32 = _variant(staging, OPTIMIZED_MODEL_NAME, "fp32", parity, how)
            (staging / MODEL_NAME).unlink()
        else:
            rejected.append(_rejection("optimised fp32", parity, 1.0))
            (staging / OPTIMIZED_MODEL_NAME).unlink()
    models = [fp32]
    if options.int8:
        how = quantize_int8(
            staging / fp32.path,
            staging / INT8_MODEL_NAME,
            keep_word_embeddings_fp32=options.keep_word_embeddings_fp32,
        )
        minimum = options.int8_min_argmax_agreement
        parity = gate(INT8_MODEL_NAME, options.int8_tolerance, minimum)
        if parity.passed:
            models.append(_variant(staging, INT8_MODEL_NAME, "int8", parity, how))
        else:
            rejected.append(_rejection("int8", parity, minimum))
            (staging / INT8_MODEL_NAME).unlink()
    return models, rejected


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
    """Export, parity-check and describe a checkpoint as an fp32-only bundle in `bundle_dir`."""
    return export_bundle(
        checkpoint_dir,
        bundle_dir,
        name=name,
        version=version,
        task=task,
        provenance=provenance,
        parity_sample=parity_sample,
        evaluation=evaluation,
    ).manifest


def export_bundle(
    checkpoint_dir: Path,
    bundle_dir: Path,
    *,
    name: str,
    version: str,
    task: Task,
    provenance: Provenance,
    parity_sample: Sequence[TextPair],
    evaluation: Sequence[Evaluation] = (),
    variants: CpuVariants | None = None,
) -> BuildResult:
    """Export, parity-check and describe a checkpoint (plus optional CPU variants) as a bundle.

    The directory is assembled in a sibling staging folder and moved into place only when the
    fp32 parity check passes, so a failed export never leaves a half-written bundle behind. An
    optional variant that fails its own gate is left out and reported in `BuildResult.rejected`.
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
        models = [_variant(staging, MODEL_NAME, "fp32", parity, None)]
        rejected: list[RejectedVariant] = []
        if variants is not None:
            models, rejected = _cpu_variants(
                staging,
                checkpoint_dir,
                models[0],
                parity_sample,
                info.max_sequence_length,
                variants,
            )
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
            models=models,
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
    return BuildResult(manifest=manifest, rejected=rejected)
