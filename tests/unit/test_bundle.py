"""The bundle contract: what a valid bundle is, and a clear refusal for everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.bundle import (
    MANIFEST_NAME,
    BundleError,
    BundleManifest,
    FileDigest,
    ModelVariant,
    Provenance,
    check_graph_inputs,
    digest_file,
    load_bundle,
    read_manifest,
    sha256_of,
    write_manifest,
)


def make_bundle(directory: Path) -> BundleManifest:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text('{"model": "stand-in"}', encoding="utf-8")
    (directory / "model.onnx").write_bytes(b"\x08\x07stand-in graph bytes")
    manifest = BundleManifest(
        name="tiny",
        version="3",
        task="pair-classification",
        labels=["not_paraphrase", "paraphrase"],
        max_sequence_length=128,
        inputs=["input_ids", "attention_mask"],
        opset=18,
        tokenizer=digest_file(directory, "tokenizer.json"),
        models=[
            ModelVariant(**digest_file(directory, "model.onnx").model_dump(), precision="fp32")
        ],
        provenance=Provenance(base_model="none", target_task="demo", exporter="test", seeds=[7]),
    )
    write_manifest(directory, manifest)
    return manifest


def rewrite_manifest(directory: Path, **changes: object) -> None:
    raw = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    raw.update(changes)
    (directory / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    written = make_bundle(tmp_path)
    assert load_bundle(tmp_path) == written
    assert written.tokenizer.sha256 == sha256_of(tmp_path / "tokenizer.json")


def test_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"missing bundle\.json"):
        read_manifest(tmp_path)


def test_invalid_json_is_named(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path)


def test_unknown_schema_version_says_which(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    rewrite_manifest(tmp_path, schema_version=2)
    with pytest.raises(
        BundleError, match=r"unknown schema_version 2; this polyprobe reads schema_version 1"
    ):
        load_bundle(tmp_path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing file model\.onnx"):
        load_bundle(tmp_path)


def test_hash_mismatch_names_file_and_both_hashes(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    data = bytearray((tmp_path / "model.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (tmp_path / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"sha256 mismatch for model\.onnx") as caught:
        load_bundle(tmp_path)
    assert manifest.models[0].sha256 in str(caught.value)


def test_truncated_copy_is_a_size_mismatch(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BundleError, match=r"size mismatch for tokenizer\.json"):
        load_bundle(tmp_path)


def test_invalid_field_names_the_field(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    rewrite_manifest(tmp_path, labels=["same", "same"])
    with pytest.raises(BundleError, match=r"labels: .*must be unique"):
        load_bundle(tmp_path)


def test_unknown_field_is_refused(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    rewrite_manifest(tmp_path, lables=["typo"])
    with pytest.raises(BundleError, match="lables: Extra inputs are not permitted"):
        load_bundle(tmp_path)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd.onnx", "sub/../../x.json", ""])
def test_paths_cannot_leave_the_bundle(path: str) -> None:
    with pytest.raises(ValueError, match="inside the bundle"):
        FileDigest(path=path, sha256="0" * 64, size_bytes=1)


@pytest.mark.parametrize("path", ["model.pkl", "weights.bin", "code.py"])
def test_only_onnx_and_json_files_are_allowed(path: str) -> None:
    with pytest.raises(ValueError, match="type a bundle may not carry"):
        FileDigest(path=path, sha256="0" * 64, size_bytes=1)


def test_inputs_must_be_text_encoder_inputs(tmp_path: Path) -> None:
    make_bundle(tmp_path)
    rewrite_manifest(tmp_path, inputs=["input_ids", "pixel_values"])
    with pytest.raises(BundleError, match=r"\['pixel_values'\] are not ones a text encoder takes"):
        load_bundle(tmp_path)


def test_manifest_inputs_the_graph_lacks_are_refused(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    with pytest.raises(BundleError, match=r"lists inputs \['attention_mask'\] that the ONNX graph"):
        check_graph_inputs(tmp_path, manifest, ["input_ids"])


def test_graph_inputs_the_manifest_lacks_are_refused(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    with pytest.raises(BundleError, match=r"requires inputs \['token_type_ids'\]"):
        check_graph_inputs(tmp_path, manifest, ["input_ids", "attention_mask", "token_type_ids"])


def test_matching_graph_inputs_pass_in_any_order(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    check_graph_inputs(tmp_path, manifest, ["attention_mask", "input_ids"])


def test_write_refuses_a_manifest_that_does_not_match_the_files(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"other bytes")
    with pytest.raises(BundleError, match="mismatch"):
        write_manifest(tmp_path, manifest)


def test_one_variant_per_precision(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    duplicate = manifest.model_dump()
    duplicate["models"] = duplicate["models"] * 2
    with pytest.raises(ValueError, match="at most one model file per precision"):
        BundleManifest.model_validate(duplicate)


# --- external data, model card, provenance, parity samples and gates ---------------------------


def test_external_data_and_model_card_are_verified_like_any_file(tmp_path: Path) -> None:
    manifest = make_bundle(tmp_path)
    (tmp_path / "model.onnx_data").write_bytes(b"weights" * 10)
    (tmp_path / "README.md").write_text("# tiny\n", encoding="utf-8")
    model = manifest.models[0].model_copy(
        update={"external_data": [digest_file(tmp_path, "model.onnx_data")]}
    )
    manifest = manifest.model_copy(
        update={"models": [model], "model_card": digest_file(tmp_path, "README.md")}
    )
    write_manifest(tmp_path, manifest)
    assert load_bundle(tmp_path) == manifest
    (tmp_path / "model.onnx_data").write_bytes(b"weights" * 9 + b"WEIGHTS")
    with pytest.raises(BundleError, match=r"sha256 mismatch for model\.onnx_data"):
        load_bundle(tmp_path)
    (tmp_path / "model.onnx_data").write_bytes(b"weights" * 10)
    (tmp_path / "README.md").unlink()
    with pytest.raises(BundleError, match=r"missing file README\.md"):
        load_bundle(tmp_path)


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def test_jsonl_sample_takes_the_first_ids_in_range_per_language(tmp_path: Path) -> None:
    from export.parity import read_jsonl_sample
    from polyprobe.ids import parse_id_range

    rows = [{"id": i, "sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2} for i in range(9)]
    de = _write_jsonl(tmp_path / "de.jsonl", list(reversed(rows)))
    nli = _write_jsonl(
        tmp_path / "x.jsonl",
        [
            {"id": 5, "premise": "p", "hypothesis": "h", "label": "b", "lang": "sw"},
            {"id": 6, "premise": "p2", "hypothesis": "h2"},
        ],
    )
    sample = read_jsonl_sample([de, nli], ["a", "b"], ids=parse_id_range("4-7"), per_language=3)
    assert [(e.lang, e.id, e.label) for e in sample.examples] == [
        ("de", "4", 0),
        ("de", "5", 1),
        ("de", "6", 0),
        ("sw", "5", 1),
        ("x", "6", None),
    ]
    assert sample.examples[0].text == "a4" and sample.examples[0].text_pair == "b4"
    assert sample.languages == ["de", "sw", "x"]
    assert "ids 4-7" in sample.description and "de 3" in sample.description


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": 1, "sentence1": "a", "sentence2": "b", "label": 2}], "outside the model's 2"),
        ([{"id": 1, "sentence1": "a", "sentence2": "b", "label": "maybe"}], "not one of the"),
        ([{"id": 1, "question": "a"}], "no text fields"),
        ([{"id": 99, "sentence1": "a", "sentence2": "b"}], "no rows with ids 0-10"),
    ],
)
def test_jsonl_sample_refuses_what_it_cannot_compare(
    tmp_path: Path, rows: list[dict[str, object]], message: str
) -> None:
    from export.parity import read_jsonl_sample

    path = _write_jsonl(tmp_path / "de.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        read_jsonl_sample([path], ["a", "b"], ids=range(11), per_language=5)


@pytest.mark.parametrize("spec", ["1999-1500", "a-b", "-3", ""])
def test_bad_id_ranges_are_refused(spec: str) -> None:
    from polyprobe.ids import parse_id_range

    with pytest.raises(ValueError, match="id range"):
        parse_id_range(spec)


def _sample(langs: list[str], labels: list[int | None]):  # type: ignore[no-untyped-def]
    from export.parity import ParityExample, ParitySample

    return ParitySample(
        "test",
        tuple(
            ParityExample(lang, "t", None, label) for lang, label in zip(langs, labels, strict=True)
        ),
    )


def test_parity_report_per_language_with_accuracy_delta() -> None:
    import numpy as np

    from export.parity import Gate, compare

    reference = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    candidate = reference + np.array([[0.1, 0.0], [0.0, 0.0], [-1.5, 0.0], [0.0, 0.2]])
    sample = _sample(["de", "de", "ja", "ja"], [0, 1, 0, None])
    gate = Gate(max_abs_logit_diff=2.0, min_argmax_agreement=0.5, max_accuracy_drop=0.5)
    report = compare(candidate, reference, sample, gate, reference_name="ref")
    assert report.per_language["de"] == {
        "n": 2.0,
        "max_abs_logit_diff": pytest.approx(0.1),
        "argmax_agreement": 1.0,
        "n_labelled": 2.0,
        "accuracy_reference": 1.0,
        "accuracy": 1.0,
        "accuracy_delta": 0.0,
    }
    ja = report.per_language["ja"]
    assert ja["argmax_agreement"] == 0.5 and ja["n_labelled"] == 1.0
    assert ja["accuracy_reference"] == 1.0 and ja["accuracy"] == 0.0
    assert report.argmax_agreement == 0.75 and report.max_abs_logit_diff == 1.5
    assert not report.passed
    assert report.failures == ["ja: accuracy -100.0 points"]


def test_parity_gate_fails_on_logits_alone_and_passes_an_exact_copy() -> None:
    import numpy as np

    from export.parity import DEFAULT_GATES, compare

    reference = np.array([[3.0, -3.0], [-1.0, 1.0]])
    sample = _sample(["en", "en"], [0, 1])
    exact = compare(reference.copy(), reference, sample, DEFAULT_GATES["fp32"], reference_name="r")
    assert exact.passed and exact.failures == []
    drifted = compare(
        reference + 0.01, reference, sample, DEFAULT_GATES["fp32"], reference_name="r"
    )
    assert not drifted.passed and drifted.failures == ["max |logit diff| 1.00e-02"]
    assert drifted.argmax_agreement == 1.0


def test_gate_overrides_change_one_field_and_refuse_unknowns() -> None:
    from export.parity import DEFAULT_GATES, override_gates

    gates = override_gates(
        DEFAULT_GATES, ["int8.max_accuracy_drop=0.02", "fp16.min_argmax_agreement=1"]
    )
    assert gates["int8"].max_accuracy_drop == 0.02
    assert gates["int8"].min_argmax_agreement == DEFAULT_GATES["int8"].min_argmax_agreement
    assert gates["fp16"].min_argmax_agreement == 1.0
    assert DEFAULT_GATES["int8"].max_accuracy_drop == 0.01
    for bad in ["int4.max_accuracy_drop=1", "int8.speed=1", "int8.max_accuracy_drop", "fp16.x=y"]:
        with pytest.raises(ValueError, match="gate override"):
            override_gates(DEFAULT_GATES, [bad])


def test_provenance_carries_the_training_run_and_tolerates_unknown_keys(tmp_path: Path) -> None:
    from export.provenance import read_provenance, read_training_evaluation

    run = {
        "recipe": {"name": "stilts-xnli-pawsx", "lr": 2e-5},
        "base_model": "/work/cache/e5-small",
        "intermediate_tasks": [{"name": "xnli"}],
        "target_task": "pawsx",
        "seeds": {"data": 1, "init": 2},
        "data_ids": {"target_train": "pawsx/dev/en 0-1499", "eval": ["1500-1999"]},
        "git": {"commit": "abc123"},
        "a_key_from_the_future": {"nested": [1, 2]},
        "metrics": {"zero_shot": {"de": {"accuracy": 0.8, "n": 500}, "en": 0.9, "loss": 3.0}},
    }
    (tmp_path / "polyprobe_run.json").write_text(json.dumps(run), encoding="utf-8")
    provenance = read_provenance(tmp_path, source="ckpt", target_task=None)
    assert provenance.recipe == "stilts-xnli-pawsx"
    assert provenance.base_model == "/work/cache/e5-small"
    assert provenance.intermediate_tasks == ["xnli"] and provenance.target_task == "pawsx"
    assert provenance.seeds == [1, 2] and provenance.code_version == "abc123"
    assert provenance.data_ids == {"target_train": "pawsx/dev/en 0-1499", "eval": '["1500-1999"]'}
    assert provenance.training_run == run and provenance.source == "ckpt"
    (evaluation,) = read_training_evaluation(tmp_path, "pawsx")
    assert evaluation.split == "polyprobe_run.json metrics: zero_shot"
    assert {k: (r.n, r.accuracy) for k, r in evaluation.per_language.items()} == {
        "de": (500, 0.8),
        "en": (0, 0.9),
    }
    # metrics.json, when present, is preferred; wrong types are skipped, not fatal.
    (tmp_path / "metrics.json").write_text(json.dumps({"ja": {"acc": 0.7}}), encoding="utf-8")
    (tmp_path / "polyprobe_run.json").write_text(json.dumps({"seeds": "x", "recipe": 3}), "utf-8")
    assert [e.per_language["ja"].accuracy for e in read_training_evaluation(tmp_path, None)] == [
        0.7
    ]
    lenient = read_provenance(tmp_path, source="ckpt", target_task="t")
    assert lenient.seeds == [] and lenient.recipe is None and lenient.target_task == "t"


def test_without_a_run_manifest_provenance_names_only_the_source(tmp_path: Path) -> None:
    from export.model_card import render_model_card
    from export.provenance import read_provenance

    provenance = read_provenance(tmp_path, source="org/model", target_task=None)
    assert provenance.training_run is None and provenance.source == "org/model"
    assert "no polyprobe_run.json" in provenance.base_model
    card = render_model_card(make_bundle(tmp_path).model_copy(update={"provenance": provenance}))
    assert "No training run manifest" in card and "org/model" in card
    assert "## Intended use and limits" in card


def test_served_variant_follows_the_device_and_never_crosses_over(tmp_path: Path) -> None:
    from service.backend import choose_variant

    manifest = make_bundle(tmp_path)
    fp32 = manifest.models[0]

    def variant(precision: str) -> ModelVariant:
        return fp32.model_copy(update={"precision": precision, "path": f"model.{precision}.onnx"})

    cpu_only = manifest.model_copy(update={"models": [fp32, variant("int8")]})
    gpu_only = manifest.model_copy(update={"models": [fp32, variant("fp16")]})
    # int8 is a CPU variant and fp16 a CUDA one: on the other device the fp32 file is served.
    assert choose_variant(cpu_only, on_cuda=True, forced=None).precision == "fp32"
    assert choose_variant(gpu_only, on_cuda=False, forced=None).precision == "fp32"
    assert choose_variant(gpu_only, on_cuda=True, forced=None).precision == "fp16"
    # The setting wins over the device, e.g. fp16 on CPU to check it before a GPU deployment.
    assert choose_variant(gpu_only, on_cuda=False, forced="fp16").precision == "fp16"


def test_training_metrics_from_polyprobe_train_reach_the_bundle(tmp_path: Path) -> None:
    from export.provenance import read_training_evaluation
    from training.evaluate import Prediction, zero_shot_metrics

    predictions = [Prediction(i, lang, i % 2, 0) for lang in ("en", "de") for i in range(10)]
    metrics = zero_shot_metrics(predictions, ("not_paraphrase", "paraphrase"), majority_label=0)
    (tmp_path / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (evaluation,) = read_training_evaluation(tmp_path, "pawsx")
    assert {k: (r.n, r.accuracy) for k, r in evaluation.per_language.items()} == {
        "de": (10, 0.5),
        "en": (10, 0.5),
    }
    assert evaluation.per_language["en"].macro_f1 == pytest.approx(1 / 3)
    en = evaluation.per_language["en"]
    assert en.majority_baseline == 0.5
    assert en.accuracy_ci95 is not None
    low, high = en.accuracy_ci95
    assert low < 0.5 < high


def test_model_card_states_intervals_and_the_majority_baseline(tmp_path: Path) -> None:
    from export.bundle import Evaluation, LanguageResult
    from export.model_card import render_model_card

    evaluation = Evaluation(
        task="pawsx",
        split="metrics.json",
        ids="1500-1999",
        per_language={
            "de": LanguageResult(
                n=500, accuracy=0.75, accuracy_ci95=(0.71, 0.79), majority_baseline=0.6
            ),
            "ja": LanguageResult(
                n=500, accuracy=0.62, accuracy_ci95=(0.58, 0.66), majority_baseline=0.59
            ),
            "ko": LanguageResult(
                n=500, accuracy=0.5, accuracy_ci95=(0.46, 0.54), majority_baseline=0.6
            ),
        },
    )
    card = render_model_card(make_bundle(tmp_path).model_copy(update={"evaluation": [evaluation]}))
    assert "| de | 500 | 75.0 [71.0, 79.0] |  | 60.0 | above |" in card
    assert "| ja | 500 | 62.0 [58.0, 66.0] |  | 59.0 | not clearly above |" in card
    assert "| ko | 500 | 50.0 [46.0, 54.0] |  | 60.0 | below |" in card
