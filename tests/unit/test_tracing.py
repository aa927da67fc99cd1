"""Tracing setup without a model: the OTLP exporter against a real HTTP collector on loopback, the
console exporter, and the clear refusal when OpenTelemetry is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.datastructures import Headers

from service.app import create_app
from service.settings import Settings
from service.tracing import (
    INSTALL_HINT,
    RequestTracer,
    TracingUnavailableError,
    request_tracer,
)

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk (dev extra)")

ROOT = Path(__file__).resolve().parents[2]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def _predict_scope() -> dict[str, Any]:
    """An ASGI scope as it is after routing a v1 prediction (the router adds route and params)."""
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/models/demo/predict",
        "headers": [(b"traceparent", f"00-{CALLER_TRACE}-{CALLER_SPAN}-01".encode())],
        "route": SimpleNamespace(path="/v1/models/{model}/predict"),
        "path_params": {"model": "demo"},
    }


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]  # one list per collector, set by the fixture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((self.path, self.headers["content-type"], body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def otlp_tracer(
    collector: tuple[str, list[tuple[str, str, bytes]]],
) -> tuple[RequestTracer, list[tuple[str, str, bytes]]]:
    """A tracer exporting over OTLP/HTTP to the loopback collector, and what the collector got."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="polyprobe[tracing]")
    url, received = collector
    tracer = request_tracer(Settings(tracing="otlp", tracing_otlp_endpoint=f"{url}/v1/traces"))
    assert tracer is not None
    return tracer, received


def test_otlp_sends_the_request_span_to_the_collector(
    otlp_tracer: tuple[RequestTracer, list[tuple[str, str, bytes]]],
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    tracer, received = otlp_tracer
    response_headers = Headers(
        {"x-tokenize-time": "1.250", "x-queue-time": "0.500", "x-inference-time": "3.000",
         "x-batch-size": "4"}
    )  # fmt: skip
    trace_id = tracer.record(
        _predict_scope(),
        status=503,
        request_id="req-1",
        start_ns=1_700_000_000_000_000_000,
        response_headers=response_headers,
    )
    tracer.shutdown()  # flushes the batch processor

    assert trace_id == CALLER_TRACE, "the span joins the caller's trace (traceparent)"
    assert len(received) == 1
    path, content_type, body = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    export = ExportTraceServiceRequest.FromString(body)
    resource = export.resource_spans[0].resource
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "polyprobe"
    (span,) = export.resource_spans[0].scope_spans[0].spans
    assert span.name == "POST /v1/models/{model}/predict"
    assert span.trace_id.hex() == CALLER_TRACE
    assert span.parent_span_id.hex() == CALLER_SPAN
    assert span.kind == span.SPAN_KIND_SERVER
    assert span.start_time_unix_nano == 1_700_000_000_000_000_000
    assert span.status.code == span.status.STATUS_CODE_ERROR
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["http.response.status_code"].int_value == 503
    assert attributes["error.type"].string_value == "503"
    assert attributes["polyprobe.model"].string_value == "demo"
    assert attributes["polyprobe.request_id"].string_value == "req-1"
    assert attributes["polyprobe.tokenize_ms"].double_value == 1.25
    assert attributes["polyprobe.inference_ms"].double_value == 3.0
    assert attributes["polyprobe.batch_size"].int_value == 4


def test_health_checks_and_scrapes_are_not_traced(
    otlp_tracer: tuple[RequestTracer, list[tuple[str, str, bytes]]],
) -> None:
    tracer, received = otlp_tracer
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/ready"):
        scope = {**_predict_scope(), "method": "GET", "path": path, "path_params": {}}
        assert (
            tracer.record(scope, status=200, request_id="r", start_ns=1, response_headers=None)
            is None
        )
    tracer.shutdown()
    assert received == []


def test_console_prints_spans_to_stdout() -> None:
    script = (
        "from types import SimpleNamespace\n"
        "from service.settings import Settings\n"
        "from service.tracing import request_tracer\n"
        "tracer = request_tracer(Settings(tracing='console'))\n"
        "scope = {'type': 'http', 'method': 'GET', 'path': '/v1/models/m', 'headers': [],\n"
        "         'route': SimpleNamespace(path='/v1/models/{model}'), 'path_params': {'model': 'm'}}\n"
        "tracer.record(scope, status=404, request_id='rid-9', start_ns=1, response_headers=None)\n"
        "tracer.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYPROBE_", "OTEL_"))}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    span = json.loads(done.stdout)
    assert span["name"] == "GET /v1/models/{model}"
    assert span["kind"] == "SpanKind.SERVER"
    assert span["attributes"]["polyprobe.request_id"] == "rid-9"
    assert span["status"]["status_code"] == "UNSET", "a 4xx is not the server's error"


@pytest.mark.parametrize(
    ("tracing", "missing"),
    [
        ("console", "opentelemetry.sdk.trace"),
        ("otlp", "opentelemetry.sdk.trace"),
        ("otlp", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ],
)
def test_missing_opentelemetry_is_refused_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tracing: str, missing: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # what an import finds when not installed
    with pytest.raises(TracingUnavailableError) as refused:
        create_app(Settings(model_repo=tmp_path, tracing=tracing))  # type: ignore[arg-type]
    assert INSTALL_HINT in str(refused.value)
    assert missing in str(refused.value)
    assert isinstance(refused.value, ValueError), "`polyprobe serve` prints ValueErrors, exits 2"


def test_console_does_not_need_the_otlp_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    tracer = request_tracer(Settings(tracing="console"))
    assert tracer is not None
    tracer.shutdown()


def test_an_exporter_with_tracing_off_is_a_mistake() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert request_tracer(Settings(tracing="off")) is None
    with pytest.raises(ValueError, match="POLYPROBE_TRACING is off"):
        request_tracer(Settings(tracing="off"), InMemorySpanExporter())


def test_otlp_endpoint_must_be_a_url() -> None:
    with pytest.raises(ValueError, match="tracing_otlp_endpoint"):
        Settings(tracing="otlp", tracing_otlp_endpoint="collector:4318")
