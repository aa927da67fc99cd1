"""Assemble a servable bundle from a Hugging Face sequence-classification checkpoint."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.bundle import (
    TOKENIZER_NAME,
    BundleManifest,
    Evaluation,
    FileDigest,
    ModelVariant,
    ParityReport,
    Precision,
    Provenance,
    Task,
    digest_file,
    write_manifest,
)
from export.model_card import MODEL_CARD_NAME, render_model_card
from export.onnx_export import export_sequence_classifier
from export.parity import (
    DEFAULT_GATES,
    EncodedSample,
    Gate,
    GateName,
    ParitySample,
    compare,
    encode_sample,
    onnx_logits,
    reference_logits,
)
from export.variants import (
    EXTERNAL_DATA_THRESHOLD,
    OptimizeLevel,
    convert_fp16,
    external_files,
    onnx_bytes,
    optimize_fp32,
    quantize_int8,
    read_model_shape,
    store,
)

logger = logging.getLogger(__name__)

MODEL_NAME = "model.onnx"
OPTIMIZED_MODEL_NAME = "model.optimized.onnx"
FP16_MODEL_NAME = "model.fp16.onnx"
INT8_MODEL_NAME = "model.int8.onnx"


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


class ParityError(RuntimeError):
    """The plain fp32 graph disagrees with its checkpoint beyond tolerance; nothing is written."""


@dataclass(frozen=True)
class ExportOptions:
    """Which variants to build beside the plain fp32 export, the gates they face, how to store them.

    A fused graph that passes replaces the plain export as the bundle's fp32 variant (a bundle holds
    one file per precision); fp16 and int8 are made from whichever fp32 graph won.
    """

    optimize: OptimizeLevel | None = None
    fp16: bool = False
    int8: bool = False
    keep_word_embeddings_fp32: bool = True
    gates: Mapping[GateName, Gate] = field(default_factory=lambda: dict(DEFAULT_GATES))
    # Graphs above this many bytes keep their weights in `<file>_data`; tests lower it.
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD


@dataclass(frozen=True)
class RejectedVariant:
    name: str
    reason: str
    parity: ParityReport | None = None


@dataclass(frozen=True)
class BuildResult:
    manifest: BundleManifest
    rejected: list[RejectedVariant] = field(default_factory=list)


def _rejection(name: str, parity: ParityReport) -> RejectedVariant:
    reason = (
        f"{name} failed its parity gate on {parity.n_examples} inputs: "
        f"{'; '.join(parity.failures)} (gate: max |logit diff| <= {parity.tolerance:g}, argmax "
        f"agreement >= {parity.min_argmax_agreement:g}, accuracy drop <= "
        f"{parity.max_accuracy_drop:g} per language)"
    )
    logger.warning("not writing %s", reason)
    return RejectedVariant(name=name, reason=reason, parity=parity)


@dataclass
class _Staging:
    """The bundle being assembled: its folder, parity inputs and reference logits (computed once)."""

    root: Path
    encoded: EncodedSample
    reference: np.ndarray
    reference_name: str
    options: ExportOptions

    def external(self, source: str) -> bool:
        return onnx_bytes(self.root / source) > self.options.external_data_threshold

    def gate(self, path: str, gate: GateName) -> ParityReport:
        return compare(
            onnx_logits(self.root / path, self.encoded),
            self.reference,
            self.encoded.sample,
            self.options.gates[gate],
            reference_name=self.reference_name,
        )

    def variant(
        self, path: str, precision: Precision, parity: ParityReport, how: str | None
    ) -> ModelVariant:
        external = store(self.root / path, self.options.external_data_threshold)
        return ModelVariant(
            **digest_file(self.root, path).model_dump(),
            precision=precision,
            external_data=[digest_file(self.root, name) for name in external],
            optimization=how,
            parity=parity,
        )

    def remove(self, path: str) -> None:
        for name in external_files(self.root / path):
            (self.root / name).unlink()
        (self.root / path).unlink()

    def try_variant(
        self,
        name: str,
        path: str,
        precision: Precision,
        make: Callable[[], str],
        gate: GateName | None = None,
    ) -> ModelVariant | RejectedVariant:
        how = make()
        parity = self.gate(path, gate or precision)
        if parity.passed:
            return self.variant(path, precision, parity, how)
        self.remove(path)
        return _rejection(name, parity)


def _build_variants(
    staging: _Staging, checkpoint_dir: Path, base: ModelVariant
) -> tuple[list[ModelVariant], list[RejectedVariant]]:
    """Build, gate and keep (or delete) the optional variants; the first model is the fp32 one."""
    options = staging.options
    root = staging.root
    fp32 = base
    built: list[ModelVariant | RejectedVariant] = []
    if options.optimize is not None:
        level = options.optimize
        outcome = staging.try_variant(
            f"optimised fp32 ({level})",
            OPTIMIZED_MODEL_NAME,
            "fp32",
            lambda: optimize_fp32(
                root / MODEL_NAME,
                root / OPTIMIZED_MODEL_NAME,
                read_model_shape(checkpoint_dir),
                level,
                external=staging.external(MODEL_NAME),
            ),
            gate="fp32-O3" if level == "O3" else "fp32",
        )
        if isinstance(outcome, ModelVariant):
            fp32 = outcome
            staging.remove(MODEL_NAME)
        else:
            built.append(outcome)
    if options.fp16:
        built.append(
            staging.try_variant(
                "fp16",
                FP16_MODEL_NAME,
                "fp16",
                lambda: convert_fp16(
                    root / fp32.path, root / FP16_MODEL_NAME, external=staging.external(fp32.path)
                ),
            )
        )
    if options.int8:
        built.append(
            staging.try_variant(
                "int8",
                INT8_MODEL_NAME,
                "int8",
                lambda: quantize_int8(
                    root / fp32.path,
                    root / INT8_MODEL_NAME,
                    keep_word_embeddings_fp32=options.keep_word_embeddings_fp32,
                    external=staging.external(fp32.path),
                ),
            )
        )
    models = [fp32, *(b for b in built if isinstance(b, ModelVariant))]
    return models, [b for b in built if isinstance(b, RejectedVariant)]


def build_bundle(
    checkpoint_dir: Path,
    bundle_dir: Path,
    *,
    name: str,
    version: str,
    task: Task,
    provenance: Provenance,
    parity_sample: ParitySample,
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
    parity_sample: ParitySample,
    evaluation: Sequence[Evaluation] = (),
    options: ExportOptions | None = None,
) -> BuildResult:
    """Export, parity-check and describe a checkpoint (plus optional variants) as a bundle.

    The directory is assembled in a sibling staging folder and moved into place only when the
    plain fp32 graph passes its gate, so a failed export never leaves a half-written bundle behind.
    An optional variant that fails its own gate is left out and reported in `BuildResult.rejected`.
    """
    options = options or ExportOptions()
    if not parity_sample.examples:
        raise ValueError("the parity sample must hold at least one input")
    info = read_checkpoint_info(checkpoint_dir)
    if len(info.labels) < 2:
        raise ValueError(f"{checkpoint_dir}/config.json has no id2label with at least two labels")
    tokenizer_source = checkpoint_dir / TOKENIZER_NAME
    if not tokenizer_source.is_file():
        raise FileNotFoundError(f"{tokenizer_source} is missing: save the tokenizer with the model")

    root = bundle_dir.with_name(bundle_dir.name + ".staging")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        shutil.copyfile(tokenizer_source, root / TOKENIZER_NAME)
        graph = export_sequence_classifier(checkpoint_dir, root / MODEL_NAME)
        encoded = encode_sample(
            parity_sample, root / TOKENIZER_NAME, info.max_sequence_length, graph.input_names
        )
        reference, reference_name = reference_logits(checkpoint_dir, encoded)
        staging = _Staging(root, encoded, reference, reference_name, options)
        parity = staging.gate(MODEL_NAME, "fp32")
        if not parity.passed:
            raise ParityError(
                f"the fp32 ONNX graph disagrees with {checkpoint_dir}: "
                f"{'; '.join(parity.failures)} ({options.gates['fp32'].describe()})"
            )
        models = [staging.variant(MODEL_NAME, "fp32", parity, None)]
        models, rejected = _build_variants(staging, checkpoint_dir, models[0])
        manifest = BundleManifest(
            name=name,
            version=version,
            task=task,
            labels=info.labels,
            max_sequence_length=info.max_sequence_length,
            inputs=graph.input_names,
            outputs=graph.output_names,
            opset=graph.opset,
            tokenizer=digest_file(root, TOKENIZER_NAME),
            models=models,
            provenance=provenance.model_copy(update={"exporter": graph.exporter}),
            evaluation=list(evaluation),
        )
        manifest = manifest.model_copy(
            update={"model_card": _write_card(root, manifest, [r.reason for r in rejected])}
        )
        write_manifest(root, manifest)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        root.rename(bundle_dir)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return BuildResult(manifest=manifest, rejected=rejected)


def _write_card(root: Path, manifest: BundleManifest, rejected: Sequence[str]) -> FileDigest:
    (root / MODEL_CARD_NAME).write_text(render_model_card(manifest, rejected), encoding="utf-8")
    return digest_file(root, MODEL_CARD_NAME)
