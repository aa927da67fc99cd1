"""Fault injection against the real server: broken bundles, a model that cannot load, inference
that raises or stalls, and requests too large to take. The service must answer every time.

Faults come in through the backend factory (a wrapper around the real ONNX Runtime session), so
everything else on the path (uvicorn, routes, batcher, tokenizer, model) is the production code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from export.bundle import BundleError, digest_file, load_bundle
from service.app import create_app
from service.backend import OnnxRuntimeBackend
from service.repository import ModelLocation, is_model_name, is_version, load_model
from service.settings import Settings
from tests.integration.conftest import copy_bundle
from tests.integration.faults import Fault, faulty_factory
from tests.integration.inprocess_server import serve_in_thread
from tests.integration.test_model_reload import corrupt, wait_until

pytestmark = pytest.mark.integration

PAIR = {"text": "Die Katze schläft.", "text_pair": "Le chat dort."}
V2_BODY = {
    "inputs": [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": [PAIR["text"]]},
        {"name": "text_pair", "datatype": "BYTES", "shape": [1], "data": [PAIR["text_pair"]]},
    ]
}
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def fault() -> Fault:
    return Fault()


@pytest.fixture(scope="module")
def url(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory, fault: Fault) -> Iterator[str]:
    repo = tmp_path_factory.mktemp("faults-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    copy_bundle(demo_bundle, repo, "healthy", "1")
    corrupt(copy_bundle(demo_bundle, repo, "shamismatch", "1"))
    (copy_bundle(demo_bundle, repo, "notokenizer", "1") / "tokenizer.json").unlink()
    (copy_bundle(demo_bundle, repo, "garbled", "1") / "bundle.json").write_text("{", "utf-8")
    copy_bundle(demo_bundle, repo, "unloadable", "1")
    _truncated_graph(copy_bundle(demo_bundle, repo, "notonnx", "1"))
    settings = Settings(
        model_repo=repo, request_timeout_ms=1000, max_inputs_per_request=16, max_body_bytes=MAX_BODY
    )
    app = create_app(settings, backend_factory=faulty_factory({"demo/1": fault}, {"unloadable"}))
    with serve_in_thread(app) as base_url:
        yield base_url


@pytest.fixture
def client(url: str, fault: Fault) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as http_client:
        yield http_client
    fault.heal()


def predict(client: httpx.Client, model: str = "demo", inputs: Any = None) -> httpx.Response:
    return client.post(f"/v1/models/{model}/predict", json={"inputs": inputs or [PAIR]})


def test_broken_models_are_refused_with_a_reason_and_the_rest_serve(
    client: httpx.Client,
) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503  # strict readiness: every model in the repository must load
    assert ready.json()["models"] == {
        "demo": "ready",
        "garbled": "failed",
        "healthy": "ready",
        "notokenizer": "failed",
        "notonnx": "failed",
        "shamismatch": "failed",
        "unloadable": "failed",
    }
    errors = {m["name"]: m["error"] for m in client.get("/v1/models").json()["models"]}
    assert "sha256 mismatch for model.onnx" in errors["shamismatch"]
    assert "missing file tokenizer.json" in errors["notokenizer"]
    assert "bundle.json is not valid JSON" in errors["garbled"]
    assert "injected fault: no session can be created for unloadable" in errors["unloadable"]
    # Hashes and sizes pass; the real ONNX Runtime session is what refuses the graph.
    assert "ONNX Runtime cannot load model.onnx" in errors["notonnx"]
    for name in ("demo", "healthy"):
        assert predict(client, name).status_code == 200
    not_onnx = predict(client, "notonnx")
    assert not_onnx.status_code == 503
    assert "ONNX Runtime cannot load model.onnx" in not_onnx.json()["error"]["message"]
    ready_series = [
        line
        for line in client.get("/metrics").text.splitlines()
        if "polyprobe_model_ready{" in line
    ]
    assert 'polyprobe_model_ready{model="notonnx"} 0.0' in ready_series
    assert 'polyprobe_model_ready{model="healthy"} 1.0' in ready_series
    refused = predict(client, "notokenizer")
    assert refused.status_code == 503
    assert "missing file tokenizer.json" in refused.json()["error"]["message"]
    v2 = client.get("/v2/models/shamismatch/ready")
    assert v2.status_code == 503
    assert "sha256 mismatch" in v2.json()["error"]


def test_inference_that_raises_is_a_500_and_the_worker_survives(
    client: httpx.Client, fault: Fault
) -> None:
    fault.fail()
    failed = predict(client)
    assert failed.status_code == 500
    assert failed.json()["error"] == {
        "type": "internal",
        "message": "internal error; the server log has details",
    }
    failed_v2 = client.post("/v2/models/demo/infer", json=V2_BODY)
    assert failed_v2.status_code == 500
    assert isinstance(failed_v2.json()["error"], str)
    fault.heal()
    assert predict(client).status_code == 200
    assert client.post("/v2/models/demo/infer", json=V2_BODY).status_code == 200


def test_stalled_inference_meets_the_deadline_and_the_worker_survives(
    client: httpx.Client, fault: Fault
) -> None:
    fault.stall()
    stalled = predict(client)
    assert stalled.status_code == 503
    assert stalled.json()["error"]["type"] == "deadline_exceeded"
    assert "could not answer within 1000 ms" in stalled.json()["error"]["message"]
    assert int(stalled.headers["retry-after"]) >= 1
    assert fault.entered.is_set()  # the deadline fired while the session was really stuck
    stalled_v2 = client.post("/v2/models/demo/infer", json=V2_BODY)
    assert stalled_v2.status_code == 503
    assert "could not answer within 1000 ms" in stalled_v2.json()["error"]
    # Another model has its own worker and is not held up.
    assert predict(client, "healthy").status_code == 200
    fault.heal()
    wait_until(lambda: predict(client).status_code == 200, "demo to answer after the stall")
    assert client.get("/healthz").status_code == 200


def _chunks(total: int) -> Iterator[bytes]:
    yield b'{"inputs": [{"text": "'
    for _ in range(total // 1024):
        yield b"a" * 1024
    yield b'", "text_pair": "b"}]}'


@pytest.mark.parametrize(
    ("send", "message"),
    [
        (
            lambda c: predict(c, inputs=[PAIR] * 17),
            "17 inputs in one request; the limit is 16",
        ),
        (
            lambda c: predict(c, inputs=[{"text": "x" * 10_001, "text_pair": "y"}]),
            "has 10001 characters; the limit is 10000",
        ),
        (
            lambda c: c.post("/v1/models/demo/predict", content=b" " * (MAX_BODY + 1)),
            f"request body over {MAX_BODY} bytes",
        ),
        (
            # No Content-Length: the body is counted as it streams in and cut off at the cap.
            lambda c: c.post("/v1/models/demo/predict", content=_chunks(4 * MAX_BODY)),
            f"request body over {MAX_BODY} bytes",
        ),
        (
            lambda c: c.post(
                "/v2/models/demo/infer",
                json={
                    "inputs": [
                        {"name": "text", "datatype": "BYTES", "shape": [2**40], "data": ["a"]},
                        V2_BODY["inputs"][1],
                    ]
                },
            ),
            "input 'text' has 1099511627776 elements; the limit is 16",
        ),
    ],
    ids=["inputs", "text", "declared-body", "streamed-body", "v2-declared-shape"],
)
def test_memory_sized_requests_are_refused_up_front(
    client: httpx.Client, send: Any, message: str
) -> None:
    response = send(client)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert message in (error if isinstance(error, str) else error["message"])
    assert predict(client).status_code == 200


def _truncated_graph(bundle: Path) -> None:
    """model.onnx cut in half, with bundle.json re-hashed to vouch for it: a bundle that passes
    every file check, so only loading the graph can find the damage."""
    graph = bundle / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    for variant in raw["models"]:
        if variant["path"] == "model.onnx":
            variant.update(digest_file(bundle, "model.onnx").model_dump())
    _rewrite_manifest(bundle, models=raw["models"])
    load_bundle(bundle)  # the premise: the manifest's checks pass


def _rewrite_manifest(bundle: Path, **changes: Any) -> None:
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    raw.update(changes)
    (bundle / "bundle.json").write_text(json.dumps(raw), encoding="utf-8")


def _renamed_tokenizer(bundle: Path) -> None:
    (bundle / "tokenizer.json").rename(bundle / "tokenizer.md")
    _rewrite_manifest(bundle, tokenizer=digest_file(bundle, "tokenizer.md").model_dump())


def _model_as_json(bundle: Path) -> None:
    (bundle / "model.onnx").rename(bundle / "model.json")
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    variant = raw["models"][0]
    variant.update(digest_file(bundle, "model.json").model_dump())
    _rewrite_manifest(bundle, models=[variant])


def _pickle_listed(bundle: Path) -> None:
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    _rewrite_manifest(bundle, tokenizer={**raw["tokenizer"], "path": "tokenizer.pkl"})


def _escaping_path(bundle: Path) -> None:
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    _rewrite_manifest(bundle, tokenizer={**raw["tokenizer"], "path": "../../tokenizer.json"})


def _load(bundle: Path) -> None:
    load_model(
        ModelLocation(bundle.parent.name, bundle.name, bundle),
        Settings(model_repo=bundle.parent.parent),
        OnnxRuntimeBackend,
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_renamed_tokenizer, "tokenizer 'tokenizer.md' is not a .json file"),
        (_model_as_json, "model file 'model.json' is not an .onnx file"),
        (_pickle_listed, "has a type a bundle may not carry"),
        (_escaping_path, "must be relative and stay inside the bundle"),
    ],
    ids=["md-tokenizer", "json-model", "pickle", "path-escape"],
)
def test_only_onnx_and_json_inside_the_bundle_are_read(
    demo_bundle: Path, tmp_path: Path, damage: Any, message: str
) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path, "demo", "1")
    damage(bundle)
    with pytest.raises(BundleError) as refused:
        _load(bundle)
    assert message in str(refused.value)


@pytest.mark.parametrize("listed", ["tokenizer.json", "model.onnx"])
@pytest.mark.parametrize("where", ["repository", "elsewhere"])
def test_a_symlink_out_of_the_bundle_is_refused(
    demo_bundle: Path, tmp_path: Path, listed: str, where: str
) -> None:
    """The link's target is a byte-identical copy, so size and sha256 match: only the check
    that every file resolves inside the bundle stands between it and the server."""
    repo = tmp_path / "repo"
    bundle = copy_bundle(demo_bundle, repo, "demo", "1")
    # Another model's file in the same repository, or a file outside the repository.
    outside = repo / "other" / "1" if where == "repository" else tmp_path / "elsewhere"
    outside.mkdir(parents=True)
    target = outside / listed
    (bundle / listed).rename(target)
    (bundle / listed).symlink_to(target)
    with pytest.raises(BundleError) as refused:
        _load(bundle)
    assert f"{listed} resolves outside the bundle" in str(refused.value)
    assert str(bundle) in str(refused.value)


def test_a_symlink_that_stays_inside_the_bundle_loads(demo_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(demo_bundle, tmp_path, "demo", "1")
    (bundle / "files").mkdir()
    (bundle / "tokenizer.json").rename(bundle / "files" / "tokenizer.json")
    (bundle / "tokenizer.json").symlink_to(Path("files") / "tokenizer.json")
    _load(bundle)


@pytest.mark.parametrize(
    "name", ["..", ".", "../etc", "a/b", "a\\b", ".hidden", "", "x" * 65, "demo\n"]
)
def test_model_names_cannot_leave_the_repository(name: str) -> None:
    assert not is_model_name(name)


@pytest.mark.parametrize("version", ["..", "1/../../x", "-1", "v1", "1.", "", "1 ", "1\n"])
def test_versions_are_numbers_only(version: str) -> None:
    assert not is_version(version)


def test_valid_names_and_versions_pass() -> None:
    assert is_model_name("pawsx-xlmr_base.v2")
    assert is_version("2") and is_version("10.1")
