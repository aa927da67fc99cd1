"""Open Inference Protocol v2 against the real server, spoken by the real Triton HTTP client."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.integration

KEY = "polyprobe-v2-test-key-0123456789"
PAIRS = [
    ("Die Katze schläft auf dem Sofa.", "Le chat dort sur le canapé."),
    ("Der Zug fährt um acht.", "El perro come pan."),
    ("東京は大きい都市です。", "Tokyo is a big city."),
]


def _set_bytes_model_task(bundle: Path, task: str) -> None:
    raw = json.loads((bundle / "bundle.json").read_text("utf-8"))
    raw["task"] = task
    (bundle / "bundle.json").write_text(json.dumps(raw), encoding="utf-8")


@pytest.fixture(scope="module")
def server(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("v2-repo")
    copy_bundle(demo_bundle, repo, "pawsx", "1")
    copy_bundle(demo_bundle, repo, "pawsx", "2")
    # The same graph read as a single-text classifier: the task decides which tensors it takes.
    _set_bytes_model_task(copy_bundle(demo_bundle, repo, "single", "1"), "classification")
    with serve(repo, {"POLYPROBE_MAX_INPUTS_PER_REQUEST": "8"}) as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[Any]:
    triton = http.InferenceServerClient(server.base_url.removeprefix("http://"))
    yield triton
    triton.close()


def _bytes_input(name: str, values: list[str], *, binary: bool = True) -> Any:
    tensor = http.InferInput(name, [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object), binary_data=binary)
    return tensor


def _pair_inputs(pairs: list[tuple[str, str]], *, binary: bool = True) -> list[Any]:
    return [
        _bytes_input("text", [a for a, _ in pairs], binary=binary),
        _bytes_input("text_pair", [b for _, b in pairs], binary=binary),
    ]


def test_server_metadata_and_health(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "polyprobe"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_names_tensors_and_versions(client: Any) -> None:
    metadata = client.get_model_metadata("pawsx")
    assert metadata["versions"] == ["1", "2"]
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
        ("text", "BYTES"),
        ("text_pair", "BYTES"),
    ]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    assert metadata["parameters"]["labels"] == ["not_paraphrase", "paraphrase"]
    assert client.get_model_metadata("pawsx", "2")["parameters"]["served_version"] == "2"
    assert [t["name"] for t in client.get_model_metadata("single")["inputs"]] == ["text"]
    with pytest.raises(InferenceServerException) as not_served:
        client.get_model_metadata("pawsx", "1")
    assert not_served.value.status() == "404"
    assert "version 1 of model 'pawsx' is not loaded; version 2" in not_served.value.message()


def test_readiness_per_model_and_version(client: Any) -> None:
    assert client.is_model_ready("pawsx")
    assert client.is_model_ready("pawsx", "2")
    assert not client.is_model_ready("pawsx", "1")
    assert not client.is_model_ready("pawsx", "7")
    assert not client.is_model_ready("absent")


@pytest.mark.parametrize("binary", [True, False])
def test_infer_pairs_matches_v1_predictions(
    client: Any, server: RunningServer, binary: bool
) -> None:
    outputs = [
        http.InferRequestedOutput("probabilities", binary_data=binary),
        http.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer(
        "pawsx", _pair_inputs(PAIRS, binary=binary), outputs=outputs, request_id="req-7"
    )
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "pawsx",
        "2",
        "req-7",
    )
    probabilities = result.as_numpy("probabilities")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    with server.client() as v1:
        native = v1.post(
            "/v1/models/pawsx/predict",
            json={"inputs": [{"text": a, "text_pair": b} for a, b in PAIRS]},
        ).json()["predictions"]
    expected = np.array(
        [[p["probabilities"]["not_paraphrase"], p["probabilities"]["paraphrase"]] for p in native]
    )
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert labels == [p["label"] for p in native]


def test_default_request_gets_binary_outputs(client: Any) -> None:
    result = client.infer("pawsx", _pair_inputs(PAIRS[:1]))
    tensors = {t["name"]: t for t in result.get_response()["outputs"]}
    assert tensors["probabilities"]["parameters"]["binary_data_size"] == 2 * 4
    assert result.as_numpy("label").shape == (1,)


def test_only_requested_outputs_come_back(client: Any) -> None:
    result = client.infer(
        "pawsx",
        _pair_inputs(PAIRS[:2], binary=False),
        outputs=[http.InferRequestedOutput("label", binary_data=False)],
    )
    assert [t["name"] for t in result.get_response()["outputs"]] == ["label"]
    assert result.as_numpy("probabilities") is None


def test_versioned_infer_serves_only_the_served_version(client: Any) -> None:
    assert (
        client.infer("pawsx", _pair_inputs(PAIRS[:1]), model_version="2").get_response()[
            "model_version"
        ]
        == "2"
    )
    with pytest.raises(InferenceServerException) as old:
        client.infer("pawsx", _pair_inputs(PAIRS[:1]), model_version="1")
    assert old.value.status() == "404"


def test_single_text_model_takes_text_only(client: Any) -> None:
    result = client.infer("single", [_bytes_input("text", ["Hallo Welt", "Bonjour"])])
    assert result.as_numpy("probabilities").shape == (2, 2)
    with pytest.raises(InferenceServerException) as extra:
        client.infer("single", _pair_inputs(PAIRS[:1]))
    assert extra.value.status() == "400"
    assert (
        "unknown input 'text_pair': model single takes BYTES inputs text" in extra.value.message()
    )


def _json_tensor(name: str, data: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": "BYTES", "shape": shape or [len(data)], "data": data}


def _pair_body(texts: list[Any], pairs: list[Any], **extra: Any) -> dict[str, Any]:
    return {"inputs": [_json_tensor("text", texts), _json_tensor("text_pair", pairs)], **extra}


def _length_prefixed(*values: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


_BINARY_HEADER = json.dumps(
    {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}},
            {"name": "text_pair", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}},
        ]
    }
).encode()  # fmt: skip

BAD_REQUESTS: list[tuple[str, dict[str, Any], int, str]] = [
    ("not json", {"content": b"{nope"}, 400, "not valid JSON"),
    ("nested too deep", {"content": b"[" * 200_000 + b"]" * 200_000}, 400, "nests too deeply"),
    ("no inputs", {"json": {"inputs": []}}, 400, "inputs: List should have at least 1 item"),
    ("extra field", {"json": {**_pair_body(["a"], ["b"]), "stream": True}}, 400, "stream"),
    (
        "wrong datatype",
        {"json": {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}},
        400,
        "input 'text' has datatype FP32; text goes in as BYTES",
    ),
    (
        "shape and data disagree",
        {"json": {"inputs": [_json_tensor("text", ["a", "b"], [3]), _json_tensor("text_pair", ["c"])]}},
        400,
        "input 'text' has 2 elements but its shape says 3",
    ),
    ("rows differ", {"json": _pair_body(["a", "b"], ["c"])}, 400, "different numbers of rows"),
    ("missing pair", {"json": {"inputs": [_json_tensor("text", ["a"])]}}, 400, "missing text_pair"),
    ("unknown input", {"json": {"inputs": [_json_tensor("sentence", ["a"])]}}, 400, "unknown input 'sentence'"),
    ("twice", {"json": {"inputs": [_json_tensor("text", ["a"]), _json_tensor("text", ["a"])]}}, 400, "given twice"),
    ("not a string", {"json": _pair_body(["a", 3], ["b", "c"])}, 400, "text[1] is int"),
    ("empty text", {"json": _pair_body([""], ["b"])}, 400, "text[0] is empty"),
    (
        "control character",
        {"json": _pair_body(["a\u0007b"], ["c"])},
        400,
        "contains a control character U+0007",
    ),
    (
        "2-d shape",
        {"json": {"inputs": [_json_tensor("text", ["a", "b"], [1, 2]), _json_tensor("text_pair", ["c", "d"], [1, 2])]}},
        400,
        "use [N] or [N, 1]",
    ),
    (
        "unknown output",
        {"json": _pair_body(["a"], ["b"], outputs=[{"name": "logits"}])},
        400,
        "unknown output 'logits'",
    ),
    (
        "binary flag not a bool",
        {"json": _pair_body(["a"], ["b"], parameters={"binary_data_output": "yes"})},
        400,
        "parameter 'binary_data_output' must be true or false",
    ),
    (
        "header length beyond body",
        {"content": b'{"inputs": []}', "headers": {"inference-header-content-length": "999"}},
        400,
        "Inference-Header-Content-Length '999'",
    ),
    (
        "binary data short",
        {
            "content": _BINARY_HEADER + _length_prefixed(b"Hallo"),
            "headers": {"inference-header-content-length": str(len(_BINARY_HEADER))},
        },
        400,
        "input 'text_pair' declares 9 bytes of binary data but only 0 follow",
    ),
    (
        "binary not utf-8",
        {
            "content": _BINARY_HEADER + _length_prefixed(b"\xff\xfeHal") + _length_prefixed(b"Hello"),
            "headers": {"inference-header-content-length": str(len(_BINARY_HEADER))},
        },
        400,
        "text[0] is not UTF-8 text",
    ),
    (
        "huge declared shape",
        {"json": {"inputs": [_json_tensor("text", ["a"], [10**12]), _json_tensor("text_pair", ["b"])]}},
        413,
        "input 'text' has 1000000000000 elements; the limit is 8",
    ),
    ("too many rows", {"json": _pair_body(["a"] * 9, ["b"] * 9)}, 413, "the limit is 8"),
    (
        "text too long",
        {"json": _pair_body(["x" * 10_001], ["b"])},
        413,
        "has 10001 characters; the limit is 10000",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_kwargs", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_requests_get_a_clear_error_string(
    server: RunningServer, request_kwargs: dict[str, Any], status: int, message: str
) -> None:
    # The binary cases pair a 9-byte "Hallo" element with the header's binary_data_size of 9.
    with server.client() as raw:
        response = raw.post("/v2/models/pawsx/infer", **request_kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str)
    assert message in error


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v2/models/absent", 404, "unknown model 'absent'"),
        ("POST", "/v2/models/absent/infer", 404, "unknown model 'absent'"),
        ("GET", "/v2/models/pawsx/versions/9/ready", 404, "has no version '9'"),
        ("GET", "/v2/models/pawsx/versions/%2E%2E/ready", 404, "has no version '..'"),
        ("GET", "/v2/models/pawsx/versions/..%2F..%2Fetc/ready", 404, ""),
        ("GET", "/v2/models/..%2F..%2Fetc/ready", 404, ""),
        ("GET", "/v2/no/such/route", 404, "no route GET /v2/no/such/route"),
        ("DELETE", "/v2/models/pawsx", 405, "no route DELETE"),
    ],
)
def test_lookup_errors_are_v2_shaped(
    server: RunningServer, method: str, path: str, status: int, message: str
) -> None:
    with server.client() as raw:
        response = raw.request(method, path)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["error"], str)
    assert message in response.json()["error"]


def test_v2_routes_keep_api_keys_and_rate_limits(demo_bundle: Path, tmp_path: Path) -> None:
    copy_bundle(demo_bundle, tmp_path, "pawsx", "1")
    env = {
        "POLYPROBE_API_KEYS": KEY,
        "POLYPROBE_RATE_LIMIT_PER_SECOND": "0.01",
        "POLYPROBE_RATE_LIMIT_BURST": "2",
    }
    with serve(tmp_path, env) as running:
        url = running.base_url.removeprefix("http://")
        anonymous = http.InferenceServerClient(url)
        assert anonymous.is_server_live() and anonymous.is_server_ready()
        with pytest.raises(InferenceServerException) as refused:
            anonymous.infer("pawsx", _pair_inputs(PAIRS[:1]))
        assert refused.value.status() == "401"
        assert "bearer token is missing" in refused.value.message()
        keyed = http.InferenceServerClient(url)

        def auth() -> dict[str, str]:
            # A fresh dict each time: tritonclient adds its own headers to the one it is given.
            return {"Authorization": f"Bearer {KEY}"}

        assert keyed.infer("pawsx", _pair_inputs(PAIRS[:1]), headers=auth()).as_numpy(
            "label"
        ).shape == (1,)
        assert keyed.get_model_metadata("pawsx", headers=auth())["name"] == "pawsx"
        limited = httpx.post(
            f"{running.base_url}/v2/models/pawsx/infer",
            json=_pair_body(["a"], ["b"]),
            headers=auth(),
        )
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert "rate limit for predict traffic reached" in limited.json()["error"]
