"""The offline demo bundle: the tiny trained checkpoint from `training.demo`, exported like any other."""

from __future__ import annotations

import tempfile
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING

from export.build import build_bundle
from export.bundle import BundleManifest, Evaluation, LanguageResult, Provenance
from export.parity import builtin_sample

if TYPE_CHECKING:
    from training.demo.builder import DemoCheckpoint

DEMO_NAME = "demo"
DEMO_VERSION = "1"


def build_demo_bundle(
    bundle_dir: Path, *, seed: int = 0, progress: bool = True, version: str = DEMO_VERSION
) -> BundleManifest:
    """Train the tiny demo classifier offline and write it as a verified bundle to `bundle_dir`."""
    from training.demo.builder import DemoConfig, build_demo_checkpoint

    with tempfile.TemporaryDirectory(prefix="polyprobe-demo-") as tmp:
        checkpoint = build_demo_checkpoint(Path(tmp), DemoConfig(seed=seed), progress=progress)
        return demo_bundle_from_checkpoint(checkpoint, bundle_dir, version=version)


def demo_bundle_from_checkpoint(
    checkpoint: DemoCheckpoint, bundle_dir: Path, *, version: str = DEMO_VERSION
) -> BundleManifest:
    """Export an already trained demo checkpoint through the same path as real checkpoints."""
    provenance = Provenance(
        base_model="none: randomly initialised tiny XLM-R (training.demo)",
        recipe="training.demo.builder.DemoConfig defaults",
        target_task="demo-paraphrase (generated from the project's own multilingual corpus)",
        seeds=[checkpoint.seed],
        data_ids={"corpus_sha256": checkpoint.corpus_sha256, "split": checkpoint.data_description},
        exporter="set by build_bundle",
        source="training.demo (built in memory)",
        library_versions={
            lib: package_version(lib)
            for lib in ("torch", "transformers", "tokenizers", "onnxruntime", "polyprobe")
        },
    )
    evaluation = Evaluation(
        task="demo-paraphrase",
        split="held-out meaning keys of the demo corpus",
        ids=checkpoint.data_description,
        zero_shot=False,
        per_language={
            lang: LanguageResult(n=int(result["n"]), accuracy=float(result["accuracy"]))
            for lang, result in checkpoint.per_language_heldout_accuracy.items()
        },
        notes="A toy model that proves the serving path end to end; not a real paraphrase model.",
    )
    return build_bundle(
        checkpoint.path,
        bundle_dir,
        name=DEMO_NAME,
        version=version,
        task="pair-classification",
        provenance=provenance,
        parity_sample=builtin_sample(),
        evaluation=[evaluation],
    )
