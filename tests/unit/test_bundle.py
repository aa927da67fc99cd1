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
