"""Several models, several versions, broken bundles refused with a reason, reject-on-overlength."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from export.bundle import BundleError
from service.backend import OnnxRuntimeBackend
from service.repository import ModelLocation, load_model
from service.settings import Settings
from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration


def corrupt_model(bundle: Path) -> None:
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))


def edit_manifest(bundle: Path, **changes: object) -> None:
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    raw.update(changes)
    (bundle / "bundle.json").write_text(json.dumps(raw), encoding="utf-8")


@pytest.fixture(scope="module")
def repo_server(
    tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path
) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("repo")
    copy_bundle(demo_bundle, repo, "pawsx", "1")
    copy_bundle(demo_bundle, repo, "pawsx", "2")
    copy_bundle(demo_bundle, repo, "pawsx", "10")
    copy_bundle(demo_bundle, repo, "other", "1")
    corrupt_model(copy_bundle(demo_bundle, repo, "broken", "1"))
    with serve(repo, {"POLYPROBE_ON_OVERLENGTH": "reject"}) as running:
        yield running


def test_highest_version_is_served(repo_server: RunningServer) -> None:
    with repo_server.client() as client:
        detail = client.get("/v1/models/pawsx").json()
        assert detail["versions"] == ["1", "2", "10"]
        assert detail["served_version"] == "10"
        response = client.post(
            "/v1/models/pawsx/predict", json={"inputs": [{"text": "Hallo", "text_pair": "Hello"}]}
        )
        assert response.json()["version"] == "10"


def test_broken_model_is_refused_and_the_others_serve(repo_server: RunningServer) -> None:
    with repo_server.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["models"] == {"broken": "failed", "other": "ready", "pawsx": "ready"}
        broken = client.get("/v1/models/broken").json()
        assert broken["state"] == "failed"
        assert "sha256 mismatch for model.onnx" in broken["error"]
        response = client.post(
            "/v1/models/broken/predict", json={"inputs": [{"text": "a", "text_pair": "b"}]}
        )
        assert response.status_code == 503
        assert "sha256 mismatch" in response.json()["error"]["message"]
        ok = client.post(
            "/v1/models/other/predict", json={"inputs": [{"text": "a", "text_pair": "b"}]}
        )
        assert ok.status_code == 200
    assert "refusing model broken version 1: bundle" in repo_server.log_text()


def test_reject_mode_refuses_overlength_with_413(repo_server: RunningServer) -> None:
    long_text = "Der Hund spielt im Park. " * 60
    with repo_server.client() as client:
        response = client.post(
            "/v1/models/other/predict",
            json={
                "inputs": [
                    {"text": "kurz", "text_pair": "short"},
                    {"text": long_text, "text_pair": "x"},
                ]
            },
        )
    assert response.status_code == 413
    assert (
        "inputs [1] exceed model other's max sequence length of 128 tokens"
        in response.json()["error"]["message"]
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / "tokenizer.json").unlink(), "missing file tokenizer.json"),
        (corrupt_model, "sha256 mismatch for model.onnx"),
        (lambda b: edit_manifest(b, schema_version=9), "unknown schema_version 9"),
        (
            lambda b: edit_manifest(b, inputs=["input_ids", "attention_mask", "token_type_ids"]),
            "lists inputs ['token_type_ids'] that the ONNX graph does not declare",
        ),
        (
            lambda b: edit_manifest(b, version="7"),
            "bundle.json says demo/7 but the bundle sits in demo/1",
        ),
    ],
)
def test_each_refusal_says_what_is_wrong(
    demo_bundle: Path, tmp_path: Path, damage, message: str
) -> None:  # type: ignore[no-untyped-def]
    bundle = copy_bundle(demo_bundle, tmp_path, "demo", "1")
    damage(bundle)
    with pytest.raises(BundleError) as caught:
        load_model(
            ModelLocation("demo", "1", bundle), Settings(model_repo=tmp_path), OnnxRuntimeBackend
        )
    assert message in str(caught.value)
    assert str(bundle) in str(caught.value)


def test_intact_copy_loads(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path, "demo", "1")
    model = load_model(
        ModelLocation("demo", "1", bundle), Settings(model_repo=tmp_path), OnnxRuntimeBackend
    )
    assert set(model.backend.input_names) == set(model.manifest.inputs)
