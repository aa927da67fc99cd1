"""Every variant of a bundle (fused fp32, fp16, int8) passes its own parity gate or stays out.

Default gates (export.parity.DEFAULT_GATES): fp32 within 1e-4 of the PyTorch logits with identical
argmax (O3: 1e-2, agreement 0.99); fp16 within 5e-2, agreement 0.99; int8 within 1.0, agreement 0.98;
fp16 and int8 may lose at most one accuracy point per language where labels exist. The service then
loads each variant, inline or with external data, and answers the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import export.build as build
from export.build import BuildResult, ExportOptions, export_bundle
from export.bundle import Provenance, load_bundle
from export.parity import DEFAULT_GATES, builtin_sample
from export.variants import EXTERNAL_DATA_THRESHOLD, OptimizeLevel
from tests.integration.server import serve

pytestmark = pytest.mark.integration

PAIRS = [
    ("The cat sleeps in the garden.", "The cat is asleep in the garden."),
    ("Der Hund spielt im Park.", "Der Hund schläft im Park."),
    ("Le chat mange du poisson.", "Le chien mange du poisson."),
    ("猫在花园里睡觉。", "猫在花园里睡觉。"),
    ("Кошка спит в саду.", "Собака спит в саду."),
]
# Below every graph of the tiny model (the smallest, fp16, is ~270 kB): all go external.
LOW_THRESHOLD = 100_000


def _export(
    checkpoint_dir: Path,
    bundle_dir: Path,
    *,
    optimize: OptimizeLevel = "O2",
    threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> BuildResult:
    options = ExportOptions(
        optimize=optimize, fp16=True, int8=True, external_data_threshold=threshold
    )
    return export_bundle(
        checkpoint_dir,
        bundle_dir,
        name=bundle_dir.parent.name,
        version=bundle_dir.name,
        task="pair-classification",
        provenance=Provenance(base_model="tiny demo", target_task="demo", exporter="test"),
        parity_sample=builtin_sample(),
        options=options,
    )


@pytest.fixture(scope="module")
def variant_repo(tmp_path_factory: pytest.TempPathFactory, demo_checkpoint) -> Path:  # type: ignore[no-untyped-def]
    """One repository with the same model twice: weights inline (demo) and external (ext, O3)."""
    repo = tmp_path_factory.mktemp("variant-repo")
    inline = _export(demo_checkpoint.path, repo / "demo" / "1")
    external = _export(
        demo_checkpoint.path, repo / "ext" / "1", optimize="O3", threshold=LOW_THRESHOLD
    )
    assert inline.rejected == [] and external.rejected == []
    return repo


def test_every_variant_passes_and_is_listed(variant_repo: Path) -> None:
    manifest = load_bundle(variant_repo / "demo" / "1")
    fp32, fp16, int8 = (manifest.variant(p) for p in ("fp32", "fp16", "int8"))
    assert fp32 is not None and fp16 is not None and int8 is not None
    assert fp32.path == build.OPTIMIZED_MODEL_NAME
    assert fp32.optimization is not None and fp32.optimization.startswith("O2")
    assert "Attention" in fp32.optimization and "FastGelu" not in fp32.optimization
    for model, gate in ((fp32, "fp32"), (fp16, "fp16"), (int8, "int8")):
        parity = model.parity
        assert parity is not None and parity.passed and parity.failures == []
        assert parity.max_abs_logit_diff <= DEFAULT_GATES[gate].max_abs_logit_diff  # type: ignore[index]
        assert parity.n_examples == len(builtin_sample().examples)
        assert sorted(parity.per_language) == builtin_sample().languages
        assert model.external_data == []
    # fp16 is a real conversion, not a copy: its logits differ from fp32's, within the gate.
    assert fp16.parity is not None and fp32.parity is not None
    assert fp16.parity.max_abs_logit_diff > fp32.parity.max_abs_logit_diff
    assert int8.optimization is not None and "word embeddings kept fp32" in int8.optimization
    assert int8.size_bytes < fp32.size_bytes and fp16.size_bytes < fp32.size_bytes
    files = sorted(p.name for p in (variant_repo / "demo" / "1").iterdir())
    expected = ["README.md", "bundle.json", "tokenizer.json", fp32.path, fp16.path, int8.path]
    assert files == sorted(expected)


def test_fp16_graph_computes_in_fp16_with_float32_edges(variant_repo: Path) -> None:
    model = onnx.load(str(variant_repo / "demo" / "1" / build.FP16_MODEL_NAME))
    floats = [i for i in model.graph.initializer if i.data_type in (1, 10)]
    assert floats and all(i.data_type == onnx.TensorProto.FLOAT16 for i in floats)
    (logits,) = model.graph.output
    assert logits.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_word_embeddings_stay_fp32_in_the_int8_graph(variant_repo: Path) -> None:
    graph = onnx.load(str(variant_repo / "demo" / "1" / build.INT8_MODEL_NAME)).graph
    lookups = [
        n
        for n in graph.node
        if n.op_type in ("Gather", "EmbedLayerNormalization") and "input_ids" in n.input
    ]
    weights = {init.name: init for init in graph.initializer}
    table = next(weights[name] for node in lookups for name in node.input if name in weights)
    assert table.data_type == onnx.TensorProto.FLOAT


def test_external_data_bundle_lists_and_loads_its_weight_files(variant_repo: Path) -> None:
    bundle_dir = variant_repo / "ext" / "1"
    manifest = load_bundle(bundle_dir)
    assert [m.precision for m in manifest.models] == ["fp32", "fp16", "int8"]
    for model in manifest.models:
        assert [f.path for f in model.external_data] == [model.path + "_data"]
        graph_file = bundle_dir / model.path
        assert graph_file.stat().st_size < LOW_THRESHOLD
        assert (bundle_dir / model.external_data[0].path).stat().st_mode & 0o044 == 0o044
        loaded = onnx.load(str(graph_file))  # resolves the weights by path
        assert (
            sum(numpy_helper.to_array(i).nbytes for i in loaded.graph.initializer) > LOW_THRESHOLD
        )
    fp32 = manifest.variant("fp32")
    assert fp32 is not None and fp32.optimization is not None
    assert fp32.optimization.startswith("O3") and "FastGelu" in fp32.optimization
    assert (
        fp32.parity is not None
        and fp32.parity.tolerance == DEFAULT_GATES["fp32-O3"].max_abs_logit_diff
    )
    # No stray files: every file in the folder is one bundle.json vouches for.
    listed = {f.path for f in manifest.all_files()} | {"bundle.json"}
    assert {p.name for p in bundle_dir.iterdir()} == listed


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

    def corrupting(source: Path, target: Path, **kwargs: bool) -> str:
        how = quantize(source, target, **kwargs)
        _negate_classifier(target)
        return how

    monkeypatch.setattr(build, "quantize_int8", corrupting)
    bundle_dir = tmp_path / "demo" / "2"
    result = _export(demo_checkpoint.path, bundle_dir)

    assert [r.name for r in result.rejected] == ["int8"]
    rejected = result.rejected[0]
    assert rejected.parity is not None and not rejected.parity.passed
    assert rejected.parity.argmax_agreement < DEFAULT_GATES["int8"].min_argmax_agreement
    assert "int8 failed its parity gate" in rejected.reason
    assert "argmax agreement" in rejected.reason
    manifest = load_bundle(bundle_dir)
    assert [m.precision for m in manifest.models] == ["fp32", "fp16"]
    assert not (bundle_dir / build.INT8_MODEL_NAME).exists()
    card = (bundle_dir / "README.md").read_text(encoding="utf-8")
    assert "Left out (failed their parity gate)" in card and "int8 failed" in card


def test_service_serves_every_variant_with_the_same_answers(variant_repo: Path) -> None:
    body = {"inputs": [{"text": a, "text_pair": b} for a, b in PAIRS]}
    probabilities: dict[tuple[str, str], np.ndarray] = {}
    labels: dict[tuple[str, str], list[str]] = {}
    # No setting: the CPU default, which is int8 because it passed its gate.
    for precision in (None, "fp32", "fp16"):
        env = {"POLYPROBE_PRECISION": precision} if precision else {}
        with serve(variant_repo, env=env) as server, server.client() as client:
            listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
            for name in ("demo", "ext"):
                assert listed[name]["precision"] == (precision or "int8"), listed[name]
                response = client.post(f"/v1/models/{name}/predict", json=body)
                assert response.status_code == 200, response.text
                predictions = response.json()["predictions"]
                key = (name, precision or "int8")
                labels[key] = [p["label"] for p in predictions]
                probabilities[key] = np.array(
                    [
                        [p["probabilities"][k] for k in sorted(p["probabilities"])]
                        for p in predictions
                    ]
                )
    reference = labels[("demo", "fp32")]
    assert all(found == reference for found in labels.values()), labels
    fp32 = probabilities[("demo", "fp32")]
    np.testing.assert_allclose(probabilities[("demo", "fp16")], fp32, atol=5e-3)
    np.testing.assert_allclose(
        probabilities[("ext", "fp16")], probabilities[("demo", "fp16")], atol=1e-3
    )
    np.testing.assert_allclose(probabilities[("demo", "int8")], fp32, atol=0.1)
    # External data changes where the weights live, not the numbers; the ext graphs differ from
    # demo's only by O3's GELU approximation.
    np.testing.assert_allclose(probabilities[("ext", "fp32")], fp32, atol=1e-3)
    np.testing.assert_allclose(
        probabilities[("ext", "int8")], probabilities[("demo", "int8")], atol=0.05
    )
