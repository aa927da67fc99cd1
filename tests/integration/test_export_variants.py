"""CPU variants of a bundle (fused fp32, dynamic int8) each pass their own parity gate or stay out.

Gates (export.build constants): fused fp32 within 1e-4 of the PyTorch logits with identical argmax;
int8 argmax agreement >= 0.98 with logits within 1.0. The service then serves the int8 file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import export.build as build
from export.build import (
    FP32_LOGIT_TOLERANCE,
    INT8_MIN_ARGMAX_AGREEMENT,
    BuildResult,
    CpuVariants,
    export_bundle,
)
from export.bundle import Provenance, load_bundle
from export.demo_bundle import PARITY_SAMPLE
from tests.integration.server import serve

pytestmark = pytest.mark.integration

PAIRS = [
    ("The cat sleeps in the garden.", "The cat is asleep in the garden."),
    ("Der Hund spielt im Park.", "Der Hund schläft im Park."),
    ("Le chat mange du poisson.", "Le chien mange du poisson."),
    ("猫在花园里睡觉。", "猫在花园里睡觉。"),
]


def _export(checkpoint_dir: Path, bundle_dir: Path) -> BuildResult:
    return export_bundle(
        checkpoint_dir,
        bundle_dir,
        name="demo",
        version=bundle_dir.name,
        task="pair-classification",
        provenance=Provenance(base_model="tiny demo", target_task="demo", exporter="test"),
        parity_sample=PARITY_SAMPLE,
        variants=CpuVariants(optimize=True, int8=True),
    )


@pytest.fixture(scope="module")
def variant_repo(tmp_path_factory: pytest.TempPathFactory, demo_checkpoint) -> Path:  # type: ignore[no-untyped-def]
    repo = tmp_path_factory.mktemp("variant-repo")
    result = _export(demo_checkpoint.path, repo / "demo" / "1")
    assert result.rejected == []
    return repo


def test_fused_fp32_and_int8_pass_and_are_listed(variant_repo: Path) -> None:
    manifest = load_bundle(variant_repo / "demo" / "1")
    fp32, int8 = manifest.variant("fp32"), manifest.variant("int8")
    assert fp32 is not None and int8 is not None
    assert fp32.path == build.OPTIMIZED_MODEL_NAME
    assert fp32.optimization is not None and "Attention" in fp32.optimization
    assert fp32.parity is not None and fp32.parity.passed
    assert fp32.parity.max_abs_logit_diff <= FP32_LOGIT_TOLERANCE
    assert int8.parity is not None and int8.parity.passed
    assert int8.parity.argmax_agreement >= INT8_MIN_ARGMAX_AGREEMENT
    assert int8.parity.n_examples == len(PARITY_SAMPLE)
    assert int8.optimization is not None and "word embeddings kept fp32" in int8.optimization
    assert int8.size_bytes < fp32.size_bytes
    files = sorted(p.name for p in (variant_repo / "demo" / "1").iterdir())
    assert files == sorted(["bundle.json", "tokenizer.json", fp32.path, int8.path])


def test_word_embeddings_stay_fp32_in_the_int8_graph(variant_repo: Path) -> None:
    graph = onnx.load(str(variant_repo / "demo" / "1" / build.INT8_MODEL_NAME)).graph
    lookups = [n for n in graph.node if n.op_type == "Gather" and "input_ids" in n.input]
    weights = {init.name: init for init in graph.initializer}
    table = next(weights[name] for node in lookups for name in node.input if name in weights)
    assert table.data_type == onnx.TensorProto.FLOAT


def _negate_classifier(path: Path) -> None:
    """Flip the sign of the output layer: every logit is negated, every argmax flips."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name.startswith("classifier.out_proj.") and not init.name.endswith(
            ("_scale", "_zero_point")
        ):
            values = numpy_helper.to_array(init)
            wide = -values.astype(np.int32 if values.dtype == np.int8 else values.dtype)
            init.CopyFrom(numpy_helper.from_array(wide.astype(values.dtype), init.name))
    onnx.save(model, str(path))


def test_corrupted_int8_is_rejected_with_a_reason(
    demo_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    quantize = build.quantize_int8

    def corrupting(source: Path, target: Path, *, keep_word_embeddings_fp32: bool) -> str:
        how = quantize(source, target, keep_word_embeddings_fp32=keep_word_embeddings_fp32)
        _negate_classifier(target)
        return how

    monkeypatch.setattr(build, "quantize_int8", corrupting)
    bundle_dir = tmp_path / "demo" / "2"
    result = _export(demo_checkpoint.path, bundle_dir)

    assert [r.name for r in result.rejected] == ["int8"]
    rejected = result.rejected[0]
    assert rejected.parity is not None and not rejected.parity.passed
    assert rejected.parity.argmax_agreement < INT8_MIN_ARGMAX_AGREEMENT
    assert "int8 failed its parity gate" in rejected.reason
    assert "argmax agreement" in rejected.reason
    manifest = load_bundle(bundle_dir)
    assert [m.precision for m in manifest.models] == ["fp32"]
    assert not (bundle_dir / build.INT8_MODEL_NAME).exists()


def test_service_serves_int8_with_fp32_decisions(variant_repo: Path) -> None:
    body = {"inputs": [{"text": a, "text_pair": b} for a, b in PAIRS]}
    answers: dict[str, list[str]] = {}
    for precision in ("int8", "fp32"):
        env = {"POLYPROBE_PRECISION": precision}
        with serve(variant_repo, env=env) as server, server.client() as client:
            listed = client.get("/v1/models").json()
            assert [m["precision"] for m in listed["models"]] == [precision]
            response = client.post("/v1/models/demo/predict", json=body)
            assert response.status_code == 200, response.text
            answers[precision] = [p["label"] for p in response.json()["predictions"]]
    assert answers["int8"] == answers["fp32"]
