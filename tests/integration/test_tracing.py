"""OpenTelemetry tracing of the real server: spans of real HTTP requests, and no opentelemetry at
all when tracing is off."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.integration.conftest import copy_bundle
from tests.integration.faults import Fault, faulty_factory
from tests.integration.inprocess_server import serve_in_thread

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk (dev extra)")
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PAIR = {"text": "Die Katze schläft.", "text_pair": "Le chat dort."}
CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class Traced:
    def __init__(self, base_url: str, exporter: InMemorySpanExporter, fault: Fault) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=60)
        self.exporter = exporter
        self.fault = fault

    def span_of(self, response: httpx.Response) -> ReadableSpan:
        """The span carrying the response's request id. The span is made once the response is
        sent, so it may land a moment after the client has the response."""
        rid = response.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            spans = _with_request_id(self.exporter.get_finished_spans(), rid)
            if spans:
                assert len(spans) == 1, spans
                return spans[0]
            time.sleep(0.02)
        raise AssertionError(f"no span with request id {rid}")


def _with_request_id(spans: Sequence[ReadableSpan], rid: str) -> list[ReadableSpan]:
    return [s for s in spans if (s.attributes or {}).get("polyprobe.request_id") == rid]


@pytest.fixture(scope="module")
def traced(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    repo = tmp_path_factory.mktemp("traced-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    copy_bundle(demo_bundle, repo, "broken", "1")
    fault = Fault()
    exporter = InMemorySpanExporter()
    settings = Settings(model_repo=repo, tracing="console")
    app = create_app(settings, backend_factory=faulty_factory({"broken/1": fault}),
                     span_exporter=exporter)  # fmt: skip
    with serve_in_thread(app) as base_url:
        running = Traced(base_url, exporter, fault)
        yield running
        running.client.close()


def test_a_prediction_is_one_server_span_with_its_stages(
    traced: Traced, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="polyprobe.access")
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    response = traced.client.post(
        "/v1/models/demo/predict",
        json={"inputs": [PAIR, PAIR]},
        headers={"x-request-id": "trace-me.1", "traceparent": traceparent},
    )
    assert response.status_code == 200
    span = traced.span_of(response)

    assert span.name == "POST /v1/models/{model}/predict"
    assert span.kind == SpanKind.SERVER
    assert span.status.status_code == StatusCode.UNSET
    attributes = dict(span.attributes or {})
    assert attributes["polyprobe.request_id"] == "trace-me.1" == response.headers["x-request-id"]
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.route"] == "/v1/models/{model}/predict"
    assert attributes["url.path"] == "/v1/models/demo/predict"
    assert attributes["http.response.status_code"] == 200
    assert attributes["polyprobe.model"] == "demo"
    # The batcher's own measurements, as the response headers report them.
    assert attributes["polyprobe.inference_ms"] == float(response.headers["x-inference-time"]) > 0
    assert attributes["polyprobe.tokenize_ms"] == float(response.headers["x-tokenize-time"]) > 0
    assert attributes["polyprobe.queue_ms"] == float(response.headers["x-queue-time"]) >= 0
    assert attributes["polyprobe.batch_size"] == 2
    assert span.end_time is not None and span.start_time is not None
    assert (span.end_time - span.start_time) / 1e6 >= attributes["polyprobe.inference_ms"]

    # It joins the caller's trace, and the access log names the trace.
    assert format(span.context.trace_id, "032x") == CALLER_TRACE
    assert span.parent is not None and format(span.parent.span_id, "016x") == CALLER_SPAN
    access = [
        r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == "trace-me.1"
    ]
    assert [r.fields["trace_id"] for r in access] == [CALLER_TRACE]  # type: ignore[attr-defined]


def test_a_generated_request_id_is_the_one_on_the_span(traced: Traced) -> None:
    response = traced.client.get("/v1/models/demo")
    assert response.status_code == 200
    span = traced.span_of(response)
    assert span.name == "GET /v1/models/{model}"
    assert len(response.headers["x-request-id"]) == 32
    assert span.attributes is not None
    assert span.attributes["polyprobe.request_id"] == response.headers["x-request-id"]
    assert span.parent is None, "no traceparent: a trace of its own"
    assert "polyprobe.inference_ms" not in span.attributes


def test_a_server_error_is_an_error_span(traced: Traced) -> None:
    traced.fault.fail()
    try:
        response = traced.client.post("/v1/models/broken/predict", json={"inputs": [PAIR]})
    finally:
        traced.fault.heal()
    assert response.status_code == 500
    span = traced.span_of(response)
    assert span.name == "POST /v1/models/{model}/predict"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "500"
    assert span.attributes["polyprobe.model"] == "broken"


def test_client_errors_are_not_server_errors(traced: Traced) -> None:
    unknown_model = traced.client.post("/v1/models/nope/predict", json={"inputs": [PAIR]})
    unknown_route = traced.client.get("/v1/nowhere")
    assert (unknown_model.status_code, unknown_route.status_code) == (404, 404)
    model_span, route_span = traced.span_of(unknown_model), traced.span_of(unknown_route)
    assert model_span.status.status_code == StatusCode.UNSET
    assert model_span.attributes is not None and model_span.attributes["polyprobe.model"] == "nope"
    assert route_span.name == "GET", "no route template: the method alone names it"
    assert route_span.attributes is not None and "http.route" not in route_span.attributes


def test_v2_inference_is_traced_by_its_route(traced: Traced) -> None:
    body = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [PAIR["text"]]},
            {"name": "text_pair", "datatype": "BYTES", "shape": [1], "data": [PAIR["text_pair"]]},
        ]
    }
    response = traced.client.post("/v2/models/demo/infer", json=body)
    assert response.status_code == 200
    span = traced.span_of(response)
    assert span.name == "POST /v2/models/{model}/infer"
    assert span.attributes is not None and span.attributes["polyprobe.model"] == "demo"
    # v2 answers carry the batcher's stage times as v1's do, and so does its span.
    assert span.attributes["polyprobe.inference_ms"] == float(response.headers["x-inference-time"])
    assert span.attributes["polyprobe.batch_size"] == int(response.headers["x-batch-size"]) == 1


def test_health_checks_make_no_spans(traced: Traced) -> None:
    before = len(traced.exporter.get_finished_spans())
    for path in ("/healthz", "/readyz", "/metrics"):
        assert traced.client.get(path).status_code == 200
    marker = traced.client.get("/v1/models")  # answered after the probes on the same connection
    traced.span_of(marker)
    spans = traced.exporter.get_finished_spans()[before:]
    assert [s.name for s in spans] == ["GET /v1/models"]


# Run in a fresh interpreter: which opentelemetry modules the web stack imports by itself (FastAPI
# >= 0.165 imports opentelemetry's API for its own, dormant, telemetry), and which ones are
# there after the server has answered a prediction.
_SERVE_ONE_PREDICTION = """
import json, sys
import fastapi, httpx, starlette, uvicorn

def opentelemetry_modules():
    return sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")

web_stack = opentelemetry_modules()
from service.app import create_app
from service.settings import Settings
from tests.integration.inprocess_server import serve_in_thread

with serve_in_thread(create_app(Settings(model_repo=sys.argv[1]))) as url:
    response = httpx.post(url + "/v1/models/demo/predict", json={"inputs": [json.loads(sys.argv[2])]})
print(json.dumps({"status": response.status_code, "web_stack": web_stack,
                  "serving": opentelemetry_modules()}))
"""


def _serve_one_prediction(repo: Path, tracing: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYPROBE_", "OTEL_"))}
    env["POLYPROBE_TRACING"] = tracing
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_ONE_PREDICTION, str(repo), json.dumps(PAIR)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    return result


def test_tracing_off_imports_no_opentelemetry(demo_bundle: Path, tmp_path: Path) -> None:
    copy_bundle(demo_bundle, tmp_path, "demo", "1")
    off = _serve_one_prediction(tmp_path, "off")
    assert off["serving"] == off["web_stack"], "polyprobe itself imported opentelemetry modules"
    assert not [m for m in off["serving"] if m.startswith("opentelemetry.sdk")]
    # The control: the same script with tracing on does load the SDK, so the comparison above
    # can tell an import apart from its absence.
    on = _serve_one_prediction(tmp_path, "console")
    assert "opentelemetry.sdk.trace" in on["serving"]
    assert set(on["serving"]) > set(on["web_stack"])
