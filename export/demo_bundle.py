"""The offline demo bundle: the tiny trained checkpoint from `training.demo`, exported like any other."""

from __future__ import annotations

import tempfile
from importlib.metadata import version as package_version
from pathlib import Path

from export.build import build_bundle
from export.bundle import BundleManifest, Evaluation, LanguageResult, Provenance

DEMO_NAME = "demo"
DEMO_VERSION = "1"


def build_demo_bundle(
    bundle_dir: Path, *, seed: int = 0, progress: bool = True, version: str = DEMO_VERSION
) -> BundleManifest:
    """Train the tiny demo classifier offline and write it as a verified bundle to `bundle_dir`."""
    from training.demo.builder import DemoConfig, build_demo_checkpoint, parity_pairs

    with tempfile.TemporaryDirectory(prefix="polyprobe-demo-") as tmp:
        checkpoint = build_demo_checkpoint(Path(tmp), DemoConfig(seed=seed), progress=progress)
        provenance = Provenance(
            base_model="none: randomly initialised tiny XLM-R (training.demo)",
            recipe="training.demo.builder.DemoConfig defaults",
            target_task="demo-paraphrase (generated from the project's own multilingual corpus)",
            seeds=[seed],
            data_ids={
                "corpus_sha256": checkpoint.corpus_sha256,
                "split": checkpoint.data_description,
            },
            exporter="set by build_bundle",
            library_versions={
                lib: package_version(lib)
                for lib in ("torch", "transformers", "tokenizers", "onnxruntime")
            },
        )
        evaluation = Evaluation(
            task="demo-paraphrase",
            split="held-out meaning keys",
            ids=checkpoint.data_description,
            zero_shot=False,
            per_language={
                lang: LanguageResult(n=int(result["n"]), accuracy=float(result["accuracy"]))
                for lang, result in checkpoint.per_language_heldout_accuracy.items()
            },
            notes="A toy model that shows the serving path works; not a real paraphrase model.",
        )
        return build_bundle(
            checkpoint.path,
            bundle_dir,
            name=DEMO_NAME,
            version=version,
            task="pair-classification",
            provenance=provenance,
            parity_sample=parity_pairs(seed),
            evaluation=[evaluation],
        )
