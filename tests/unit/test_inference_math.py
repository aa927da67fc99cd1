"""Logits -> predictions, and the device/variant choices, with exact expected values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from export.bundle import BundleManifest, ModelVariant, ParityReport, Provenance
from service.backend import CPU, CUDA, BackendLoadError, choose_providers, choose_variant
from service.inference import softmax, to_predictions


def test_softmax_is_stable_for_huge_logits() -> None:
    probabilities = softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    np.testing.assert_allclose(probabilities, [[0.5, 0.5], [0.25, 0.75]])


def test_predictions_carry_label_margin_entropy_and_flags() -> None:
    logits = np.array([[0.0, math.log(3.0)], [math.log(4.0), 0.0]], dtype=np.float32)
    first, second = to_predictions(logits, ["no", "yes"], [False, True], [12, 128])
    assert first.label == "yes"
    assert first.probabilities == pytest.approx({"no": 0.25, "yes": 0.75}, abs=1e-6)
    assert first.margin == pytest.approx(0.5, abs=1e-6)
    assert first.entropy == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6
    )
    assert (first.truncated, first.num_tokens) == (False, 12)
    assert second.label == "no"
    assert second.probabilities["no"] == pytest.approx(0.8, abs=1e-6)
    assert (second.truncated, second.num_tokens) == (True, 128)


def test_providers_follow_the_device_setting() -> None:
    assert choose_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers("auto", [CPU]) == [CPU]
    assert choose_providers("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(BackendLoadError, match="install polyprobe\\[gpu\\]"):
        choose_providers("cuda", [CPU])


def _variant(precision: str, passed: bool | None = None) -> ModelVariant:
    parity = None
    if passed is not None:
        parity = ParityReport(
            reference="torch",
            max_abs_logit_diff=0.0,
            argmax_agreement=1.0,
            n_examples=1,
            tolerance=0.1,
            passed=passed,
        )
    return ModelVariant(
        path=f"model.{precision}.onnx",
        sha256="0" * 64,
        size_bytes=1,
        precision=precision,  # type: ignore[arg-type]
        parity=parity,
    )


def _manifest(*variants: ModelVariant) -> BundleManifest:
    return BundleManifest(
        name="m",
        version="1",
        task="classification",
        labels=["a", "b"],
        max_sequence_length=16,
        inputs=["input_ids"],
        opset=18,
        tokenizer={"path": "tokenizer.json", "sha256": "0" * 64, "size_bytes": 1},  # type: ignore[arg-type]
        models=list(variants),
        provenance=Provenance(base_model="x", target_task="y", exporter="z"),
    )


def test_variant_choice_prefers_the_device_native_precision() -> None:
    manifest = _manifest(_variant("fp32"), _variant("fp16"), _variant("int8", passed=True))
    assert choose_variant(manifest, on_cuda=True, forced=None).precision == "fp16"
    assert choose_variant(manifest, on_cuda=False, forced=None).precision == "int8"
    assert choose_variant(manifest, on_cuda=False, forced="fp32").precision == "fp32"


def test_int8_that_failed_parity_is_not_chosen() -> None:
    manifest = _manifest(_variant("fp32"), _variant("int8", passed=False))
    assert choose_variant(manifest, on_cuda=False, forced=None).precision == "fp32"


def test_forcing_a_missing_variant_says_what_exists() -> None:
    with pytest.raises(BackendLoadError, match=r"has only \['fp32'\]"):
        choose_variant(_manifest(_variant("fp32")), on_cuda=False, forced="fp16")
