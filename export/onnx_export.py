"""Checkpoint -> ONNX graph, through Hugging Face optimum with a torch.onnx fallback.

Every model polyprobe serves (the tiny demo, e5-small fine-tunes, hub checkpoints) goes through
`export_sequence_classifier`, so the demo exercises the same export path as real checkpoints.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path

logger = logging.getLogger(__name__)

# optimum recommends opset >= 18 for XLM-R; ONNX Runtime >= 1.16 runs it.
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class OnnxGraph:
    path: Path
    exporter: str
    opset: int
    input_names: list[str]
    output_names: list[str]


def graph_signature(path: Path) -> tuple[list[str], list[str], int]:
    """Input names, output names and default-domain opset of an ONNX file (weights not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    outputs = [o.name for o in model.graph.output]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return inputs, outputs, opset


class _FalseMistralRegexWarning(logging.Filter):
    """Drops transformers 4.57.x's claim that a local XLM-R tokenizer has Mistral's broken regex
    (see `training.model.load_tokenizer`): optimum loads the tokenizer itself, so the
    `fix_mistral_regex=False` that silences it elsewhere cannot be passed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "fix_mistral_regex" not in record.getMessage()


@contextmanager
def _without_false_mistral_regex_warning() -> Iterator[None]:
    tokenization_logger = logging.getLogger("transformers.tokenization_utils_base")
    quiet = _FalseMistralRegexWarning()
    tokenization_logger.addFilter(quiet)
    try:
        yield
    finally:
        tokenization_logger.removeFilter(quiet)


def _export_with_optimum(checkpoint_dir: Path, work_dir: Path, opset: int) -> str:
    from optimum.exporters.onnx import main_export

    with _without_false_mistral_regex_warning():
        main_export(
            str(checkpoint_dir),
            output=work_dir,
            task="text-classification",
            opset=opset,
            do_validation=False,
            local_files_only=True,
        )
    return f"optimum-onnx {package_version('optimum-onnx')} main_export"


def _export_with_torch(checkpoint_dir: Path, work_dir: Path, opset: int) -> str:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint_dir).eval()
    model.config.return_dict = False
    input_names = ["input_ids", "attention_mask"]
    if getattr(model.config, "type_vocab_size", 1) > 1 and model.config.model_type != "xlm-roberta":
        input_names.append("token_type_ids")
    dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in input_names)
    dynamic_axes = {name: {0: "batch_size", 1: "sequence_length"} for name in input_names}
    dynamic_axes["logits"] = {0: "batch_size"}
    torch.onnx.export(
        model,
        dummy,
        str(work_dir / "model.onnx"),
        input_names=input_names,
        output_names=["logits"],
        dynamic_axes=dynamic_axes,
        opset_version=opset,
        dynamo=False,
    )
    return f"torch.onnx.export (TorchScript) torch {torch.__version__}"


def export_sequence_classifier(
    checkpoint_dir: Path, out_path: Path, *, opset: int = DEFAULT_OPSET
) -> OnnxGraph:
    """Export a sequence-classification checkpoint to `out_path` (fp32, dynamic batch and length).

    optimum knows each architecture's inputs (XLM-R has no token_type_ids); when it cannot export a
    model, torch.onnx.export is used instead and the returned `exporter` says so.
    """
    with tempfile.TemporaryDirectory(prefix="polyprobe-export-") as tmp:
        work_dir = Path(tmp)
        try:
            exporter = _export_with_optimum(checkpoint_dir, work_dir, opset)
        except Exception as exc:  # optimum raises many types for unsupported architectures
            logger.warning(
                "optimum could not export %s (%s); using torch.onnx", checkpoint_dir, exc
            )
            for stale in work_dir.iterdir():
                stale.unlink()
            exporter = _export_with_torch(checkpoint_dir, work_dir, opset)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(work_dir / "model.onnx", out_path)
        external = work_dir / "model.onnx_data"
        if external.exists():
            shutil.move(external, out_path.with_name(out_path.name + "_data"))
    inputs, outputs, found_opset = graph_signature(out_path)
    return OnnxGraph(
        path=out_path,
        exporter=exporter,
        opset=found_opset,
        input_names=inputs,
        output_names=outputs,
    )
