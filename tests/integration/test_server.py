"""The README's path, for real: `polyprobe serve` on an empty repository builds the demo bundle,
serves it with uvicorn on loopback, and every route answers over HTTP."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration

MAX_INPUTS = 16
MAX_CHARS = 2000
PREDICT = "/v1/models/demo/predict"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("empty-repo")
    env = {
        "POLYPROBE_MAX_INPUTS_PER_REQUEST": str(MAX_INPUTS),
        "POLYPROBE_MAX_TEXT_CHARS": str(MAX_CHARS),
        # No artifacts to assemble, so the empty repository gets the demo bundle.
        "POLYPROBE_ARTIFACTS_DIR": str(tmp_path_factory.mktemp("no-artifacts")),
    }
    with serve(repo, env) as running:
        assert (repo / "demo" / "1" / "bundle.json").is_file(), running.log_text()
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def metric_value(client: httpx.Client, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when absent)."""
    text = client.get("/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def pair(text: str, text_pair: str) -> dict[str, str]:
    return {"text": text, "text_pair": text_pair}


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": {"demo": "ready"}}


def test_model_listing_and_manifest(
    client: httpx.Client, server: RunningServer, tmp_path: Path
) -> None:
    listing = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["state"], m["served_version"]) for m in listing] == [
        ("demo", "ready", "1")
    ]
    assert listing[0]["provider"] == "CPUExecutionProvider"
    detail = client.get("/v1/models/demo").json()
    assert detail["labels"] == ["not_paraphrase", "paraphrase"]
    manifest = detail["manifest"]
    assert manifest["task"] == "pair-classification"
    assert manifest["models"][0]["parity"]["passed"] is True
    assert manifest["provenance"]["exporter"].startswith(("optimum", "torch.onnx"))


def test_german_and_japanese_pairs_are_classified(client: httpx.Client) -> None:
    body = {
        "inputs": [
            pair("Die Katze schläft im Garten.", "Die Katze schläft im Garten."),
            pair("猫は庭で寝ています。", "犬は駅で走っています。"),
        ]
    }
    response = client.post(PREDICT, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["model"], result["version"]) == ("demo", "1")
    assert len(result["predictions"]) == 2
    for prediction in result["predictions"]:
        probabilities = prediction["probabilities"]
        assert list(probabilities) == ["not_paraphrase", "paraphrase"]
        assert math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-6)
        assert prediction["label"] == max(probabilities, key=probabilities.__getitem__)
        assert prediction["truncated"] is False
        assert 0 < prediction["num_tokens"] < 64


def test_predictions_do_not_depend_on_batch_company(client: httpx.Client) -> None:
    lone = pair("Кошка спит в саду.", "Собака спит в саду.")
    alone = client.post(PREDICT, json={"inputs": [lone]}).json()["predictions"][0]
    crowd = [pair("x " * n, "y") for n in range(1, 6)] + [lone]
    batched = client.post(PREDICT, json={"inputs": crowd}).json()["predictions"][-1]
    for label, probability in alone["probabilities"].items():
        assert batched["probabilities"][label] == pytest.approx(probability, abs=1e-5)


def test_overlong_input_is_truncated_and_flagged(client: httpx.Client) -> None:
    long_text = "The cat sleeps in the garden. " * 50
    response = client.post(PREDICT, json={"inputs": [pair(long_text, "A cat.")]})
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    assert prediction["truncated"] is True
    assert prediction["num_tokens"] == 128


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] and error["message"]
    return str(error["message"])


@pytest.mark.parametrize(
    ("raw_body", "status", "message"),
    [
        ('{"inputs": [', 400, "not valid JSON"),
        ("[1, 2]", 422, "must be a JSON object"),
        ('{"inputs": "Hallo"}', 422, "inputs: Input should be a valid list"),
        (
            '{"inputs": [{"text": 5, "text_pair": "x"}]}',
            422,
            "inputs.0.text: Input should be a valid string",
        ),
        ('{"inputs": [{"txt": "a"}]}', 422, "inputs.0.text: Field required"),
        (
            '{"inputs": [{"text": "", "text_pair": "x"}]}',
            422,
            "inputs.0.text: String should have at least 1 character",
        ),
        ('{"inputs": []}', 422, "inputs is empty"),
        ('{"inputs": [{"text": "a"}]}', 422, "inputs[0] has no text_pair"),
        (
            '{"inputs": [{"text": "a\\u0007b", "text_pair": "x"}]}',
            422,
            "control character U+0007 at character 1",
        ),
        ('{"inputs": [{"text": "ok", "text_pair": "a\\ud800"}]}', 422, "lone surrogate"),
    ],
)
def test_bad_bodies_get_a_clear_4xx(
    client: httpx.Client, raw_body: str, status: int, message: str
) -> None:
    response = client.post(PREDICT, content=raw_body, headers={"content-type": "application/json"})
    assert message in error_of(response, status)


def test_too_many_inputs_is_413(client: httpx.Client) -> None:
    body = {"inputs": [pair("a", "b")] * (MAX_INPUTS + 1)}
    assert f"the limit is {MAX_INPUTS}" in error_of(client.post(PREDICT, json=body), 413)


def test_text_over_the_character_limit_is_413(client: httpx.Client) -> None:
    body = {"inputs": [pair("ok", "x" * (MAX_CHARS + 1))]}
    message = error_of(client.post(PREDICT, json=body), 413)
    assert f"inputs[0].text_pair has {MAX_CHARS + 1} characters" in message


def test_unknown_model_is_404_and_names_the_known_ones(client: httpx.Client) -> None:
    message = error_of(client.post("/v1/models/nope/predict", json={"inputs": []}), 404)
    assert "no model named 'nope'; this server has: demo" in message
    assert error_of(client.get("/v1/models/nope"), 404)
    assert error_of(client.get("/v1/nothing-here"), 404)


def test_metrics_count_every_request(client: httpx.Client) -> None:
    predict_labels = {"route": "/v1/models/{model}/predict", "method": "POST", "status": "200"}
    before_requests = metric_value(
        client, "polyprobe_request_duration_seconds_count", **predict_labels
    )
    before_inference = metric_value(
        client, "polyprobe_inference_duration_seconds_count", model="demo"
    )
    before_inputs = metric_value(client, "polyprobe_inputs_per_request_sum", model="demo")
    before_invalid = metric_value(client, "polyprobe_errors_total", type="invalid_input")
    before_404 = metric_value(
        client,
        "polyprobe_request_duration_seconds_count",
        route="/v1/models/{model}/predict",
        status="404",
    )

    sizes = [1, 3, 5]
    for size in sizes:
        response = client.post(PREDICT, json={"inputs": [pair("Hallo Welt", "Hello world")] * size})
        assert response.status_code == 200
    client.post(PREDICT, json={"inputs": []})
    client.post("/v1/models/missing/predict", json={"inputs": [pair("a", "b")]})

    after = metric_value(client, "polyprobe_request_duration_seconds_count", **predict_labels)
    assert after - before_requests == len(sizes)
    inference = metric_value(client, "polyprobe_inference_duration_seconds_count", model="demo")
    assert inference - before_inference == len(sizes)
    inputs = metric_value(client, "polyprobe_inputs_per_request_sum", model="demo")
    assert inputs - before_inputs == sum(sizes)
    assert (
        metric_value(client, "polyprobe_errors_total", type="invalid_input") - before_invalid == 1
    )
    not_found = metric_value(
        client,
        "polyprobe_request_duration_seconds_count",
        route="/v1/models/{model}/predict",
        status="404",
    )
    assert not_found - before_404 == 1


def test_model_info_metric_describes_the_served_variant(client: httpx.Client) -> None:
    assert (
        metric_value(client, "polyprobe_model_info", model="demo", version="1", precision="fp32")
        == 1
    )
    assert metric_value(client, "polyprobe_model_ready", model="demo") == 1


def test_metrics_are_valid_prometheus_text(client: httpx.Client) -> None:
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "polyprobe_request_duration_seconds",
        "polyprobe_inference_duration_seconds",
        "polyprobe_tokenize_duration_seconds",
        "polyprobe_inputs_per_request",
        "polyprobe_errors",
        "polyprobe_model_info",
    } <= names


def test_openapi_documents_the_error_statuses(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/v1/models/{model}/predict"]["post"]["responses"]
    assert {"200", "404", "413", "422", "503"} <= set(responses)
    assert json.dumps(spec)  # serialisable: schemathesis and client generators read it
