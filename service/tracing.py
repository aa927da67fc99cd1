"""OpenTelemetry tracing (POLYPROBE_TRACING), off by default.

Every opentelemetry import sits inside a function that runs only when tracing is on, so with it
off polyprobe imports none (FastAPI >= 0.165 imports opentelemetry-api, a dependency of its own,
for hooks that stay dormant while no global provider is set; polyprobe never sets one). The
serving install (`polyprobe[serve]`) has no SDK: `pip install "polyprobe[tracing]"` adds it and
the OTLP/HTTP exporter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polyprobe import __version__
from starlette.datastructures import Headers
from starlette.types import Scope

from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

INSTALL_HINT = 'pip install "polyprobe[tracing]"'

# Probes and scrapes arrive every few seconds from every orchestrator and Prometheus: spans of
# them would bury the predictions in the trace store and say nothing.
UNTRACED_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}
)

# The batcher measures each request's stages as totals (batcher.StageTimes: queue wait until its
# last input started, inference summed over the batches that carried its inputs), and one batch
# serves several requests at once, so a request has no start and end per stage to give child
# spans. The exact durations go on the request's span as attributes instead, read from the
# x-*-time headers that the prediction routes (v1 predict, v2 infer) send.
_STAGE_HEADERS = {
    "x-tokenize-time": "polyprobe.tokenize_ms",
    "x-queue-time": "polyprobe.queue_ms",
    "x-inference-time": "polyprobe.inference_ms",
}


class TracingUnavailableError(ValueError):
    """Tracing is on but OpenTelemetry is not installed (`polyprobe serve` prints it, exits 2)."""


class RequestTracer:
    """Makes the server span of each answered HTTP request."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry.trace import SpanKind, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._provider = provider
        self._tracer = provider.get_tracer("polyprobe", __version__)
        # W3C traceparent from the caller, so the span joins the caller's trace.
        self._propagator = TraceContextTextMapPropagator()
        self._server = SpanKind.SERVER
        self._error = StatusCode.ERROR

    def record(
        self,
        scope: Scope,
        *,
        status: int,
        request_id: str,
        start_ns: int,
        response_headers: Headers | None,
    ) -> str | None:
        """The span of a request that has just been answered; returns its trace id (32 hex
        digits), or None for a path left untraced.

        The span is made at the end because its name is the route template, known only once the
        router has run, and nothing inside the request starts spans of its own.
        """
        path: str = scope["path"]
        if path in UNTRACED_PATHS:
            return None
        method: str = scope["method"]
        template = getattr(scope.get("route"), "path", None)
        attributes: dict[str, str | int | float] = {
            "http.request.method": method,
            "url.path": path,
            "http.response.status_code": status,
            "polyprobe.request_id": request_id,
        }
        if template:
            attributes["http.route"] = template
        model = scope.get("path_params", {}).get("model")
        if isinstance(model, str):
            attributes["polyprobe.model"] = model
        if response_headers is not None:
            attributes.update(_stage_attributes(response_headers))
        if status >= 500:
            attributes["error.type"] = str(status)
        span = self._tracer.start_span(
            f"{method} {template}" if template else method,
            context=self._propagator.extract(Headers(scope=scope)),
            kind=self._server,
            attributes=attributes,
            start_time=start_ns,
        )
        # A 4xx is the caller's mistake, not the server's (OpenTelemetry's HTTP conventions).
        if status >= 500:
            span.set_status(self._error)
        span.end()
        return format(span.get_span_context().trace_id, "032x")

    def shutdown(self) -> None:
        """Blocking: export the spans still buffered."""
        self._provider.shutdown()


def _stage_attributes(response_headers: Headers) -> dict[str, float | int]:
    """The batcher's stage times (milliseconds) and batch size, from a prediction's headers."""
    attributes: dict[str, float | int] = {
        name: float(response_headers[header])
        for header, name in _STAGE_HEADERS.items()
        if header in response_headers
    }
    if "x-batch-size" in response_headers:
        attributes["polyprobe.batch_size"] = int(response_headers["x-batch-size"])
    return attributes


def request_tracer(
    settings: Settings, exporter: SpanExporter | None = None
) -> RequestTracer | None:
    """The tracer POLYPROBE_TRACING asks for, or None when it is off.

    `exporter` (for tests) replaces the console or OTLP exporter and is fed synchronously, so a
    request's span is exported before its access line is logged.
    """
    if settings.tracing == "off":
        if exporter is not None:
            raise ValueError("a span exporter was given but POLYPROBE_TRACING is off")
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        # Batched for the real exporters: exporting runs in the SDK's thread, off the requests.
        processor = (
            SimpleSpanProcessor(exporter)
            if exporter is not None
            else BatchSpanProcessor(_exporter(settings))
        )
    except ModuleNotFoundError as exc:
        raise TracingUnavailableError(
            f"POLYPROBE_TRACING={settings.tracing} needs the module {exc.name}, which is not "
            f"installed: {INSTALL_HINT}"
        ) from exc
    # polyprobe's own provider, never the global one: a global provider would also wake FastAPI's
    # native telemetry (a second server span per request), and apps built side by side (tests,
    # Ray Serve replicas) must not share one.
    provider = TracerProvider(
        resource=Resource.create({"service.name": "polyprobe", "service.version": __version__})
    )
    provider.add_span_processor(processor)
    return RequestTracer(provider)


def _exporter(settings: Settings) -> SpanExporter:
    if settings.tracing == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # None lets the exporter read OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, as collectors document.
    return OTLPSpanExporter(endpoint=settings.tracing_otlp_endpoint)
