"""The FastAPI application factory: wiring only; the logic lives in the modules it imports."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from polyprobe import __version__
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.access import AccessMiddleware, AccessPolicy, RateLimit, read_api_keys
from service.admin_routes import admin_router
from service.backend import BackendFactory, OnnxRuntimeBackend
from service.errors import ApiError
from service.logs import ACCESS_LOGGER, logged_inputs, request_id
from service.metrics import ServiceMetrics
from service.model_manager import ModelManager
from service.probe_routes import probe_router
from service.repository import ModelState
from service.routes import router
from service.settings import Settings
from service.state import ServiceState
from service.tracing import RequestTracer, request_tracer
from service.v2_routes import is_v2_path, v2_router

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)
access_logger = logging.getLogger(ACCESS_LOGGER)


def _publish_model_metrics(state: ServiceState) -> None:
    # A swapped-out version must not linger as a second "served" series.
    state.metrics.model_info.clear()
    for entry in state.models.values():
        state.metrics.model_ready.labels(entry.name).set(entry.state == ModelState.READY)
        if entry.model is not None:
            model = entry.model
            state.metrics.model_info.labels(
                model.name,
                model.version,
                model.manifest.task,
                model.variant.precision,
                model.backend.provider,
                model.variant.sha256[:12],
            ).set(1)


async def _warm_up(state: ServiceState) -> None:
    """Start every ready model's batcher after one run per length bucket, so /readyz (which
    answers only once the lifespan has started) never reports a cold model ready."""
    for name, entry in list(state.models.items()):
        if entry.model is None:
            continue
        try:
            lengths = await state.engines.add(entry.model)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            logger.error("refusing model %s: warm-up failed: %s", name, exc)
            state.models[name] = replace(
                entry, state=ModelState.FAILED, model=None, error=f"warm-up failed: {exc}"
            )
            continue
        logger.info("warmed up %s at lengths %s", name, lengths)
    _publish_model_metrics(state)


class RequestMetricsMiddleware:
    """Times, logs and (with tracing on) traces every request by its route template (not the raw
    path, which would explode labels)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        tracer: RequestTracer | None = None,
        log_inputs: bool = False,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        self.log_inputs = log_inputs

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        began_ns = time.time_ns()
        status = 500
        request_headers = Headers(scope=scope)
        rid = request_id(request_headers.get("x-request-id"))
        response_headers: Headers | None = None
        body: list[bytes] = []

        async def receive_and_keep_body() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                body.append(message.get("body", b""))
            return message

        async def send_and_record_status(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers = MutableHeaders(scope=message)
                response_headers.append("x-request-id", rid)
            await send(message)

        try:
            await self.app(
                scope, receive_and_keep_body if self.log_inputs else receive, send_and_record_status
            )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - began
            self.metrics.request_duration.labels(template, scope["method"], str(status)).observe(
                seconds
            )
            fields: dict[str, Any] = {
                "request_id": rid,
                "method": scope["method"],
                "route": template,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            }
            if self.tracer is not None:
                trace_id = self.tracer.record(
                    scope,
                    status=status,
                    request_id=rid,
                    start_ns=began_ns,
                    response_headers=response_headers,
                )
                if trace_id is not None:
                    fields["trace_id"] = trace_id
            if body:
                fields.update(
                    logged_inputs(
                        b"".join(body), request_headers.get("inference-header-content-length")
                    )
                )
            access_logger.info(
                "%s %s %d %.1f ms",
                scope["method"],
                template,
                status,
                seconds * 1000,
                extra={"fields": fields},
            )


_FRIENDLIER_PROBLEMS = {
    "string_unicode": "contains a lone surrogate (invalid Unicode): remove it",
    "model_attributes_type": 'must be a JSON object like {"inputs": [{"text": "..."}]} '
    "sent with Content-Type: application/json",
}


def _validation_message(exc: RequestValidationError) -> tuple[int, str, list[dict[str, object]]]:
    """400 for a body that is not JSON at all, 422 naming each field otherwise."""
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            where = err.get("ctx", {}).get("error", "")
            return 400, f"request body is not valid JSON ({where}): send a JSON object", []
    details: list[dict[str, object]] = [
        {
            "field": ".".join(str(p) for p in err["loc"] if p != "body") or "body",
            "problem": _FRIENDLIER_PROBLEMS.get(err["type"], err["msg"]),
        }
        for err in errors
    ]
    summary = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return 422, f"invalid request: {summary}", details


def _error_response(
    request: Request, error: dict[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(_error_body(request.url.path, error), status_code=status, headers=headers)


def _error_body(path: str, error: dict[str, Any]) -> dict[str, Any]:
    """v1's error object, or the bare message string that the v2 protocol's clients expect."""
    return {"error": error["message"] if is_v2_path(path) else error}


class UnexpectedErrorMiddleware:
    """Answers an unhandled exception with a JSON 500 and leaves the connection usable.

    Starlette's handler for `Exception` sends its response and then re-raises, after which uvicorn
    drops the connection: a keep-alive client's next request on it would be reset.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except asyncio.CancelledError:
            # uvicorn cancels what still runs at the shutdown deadline (POLYPROBE_SHUTDOWN_TIMEOUT_S)
            # and would answer it 500. The request did nothing wrong: 503 says to send it again.
            # The cancellation ends here, at the request task's outermost frame, so the answer
            # is sent whole; the task finishes right after.
            if started:
                raise
            self.metrics.errors.labels("shutting_down").inc()
            error = {
                "type": "shutting_down",
                "message": "the server stopped before this request finished (it shut down and "
                "its POLYPROBE_SHUTDOWN_TIMEOUT_S ran out): send it again",
            }
            headers = {"retry-after": "1", "connection": "close"}
            response = JSONResponse(_error_body(scope["path"], error), 503, headers=headers)
            await response(scope, receive, send)
        except Exception:
            if started:  # too late for an error response; let the server close the connection
                raise
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            self.metrics.errors.labels("internal").inc()
            error = {"type": "internal", "message": "internal error; the server log has details"}
            response = JSONResponse(_error_body(scope["path"], error), status_code=500)
            await response(scope, receive, send)


def access_policy(settings: Settings) -> AccessPolicy:
    inline = settings.api_keys.get_secret_value() if settings.api_keys else None
    return AccessPolicy(
        api_keys=read_api_keys(inline, settings.api_keys_file),
        limits={
            "predict": RateLimit(settings.rate_limit_per_second, settings.rate_limit_burst),
            "probe": RateLimit(
                settings.probe_rate_limit_per_second, settings.probe_rate_limit_burst
            ),
        },
        max_body_bytes=settings.max_body_bytes,
    )


def create_app(
    settings: Settings,
    *,
    backend_factory: BackendFactory = OnnxRuntimeBackend,
    span_exporter: SpanExporter | None = None,
) -> FastAPI:
    """Build the service; models load at startup from `settings.model_repo`.

    `span_exporter` (tests) receives the spans instead of POLYPROBE_TRACING's exporter; tracing
    must be on. Raises TracingUnavailableError (a ValueError) when tracing is on but OpenTelemetry
    is not installed.
    """
    tracer = request_tracer(settings, span_exporter)
    metrics = ServiceMetrics()
    state = ServiceState(settings=settings, metrics=metrics)
    manager = ModelManager(
        settings,
        backend_factory,
        state.models,
        on_change=lambda: _publish_model_metrics(state),
        warm_up=state.engines.add,
        on_reload=lambda outcome: metrics.model_reloads.labels(outcome.model, outcome.result).inc(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.load_all()
        await _warm_up(state)
        state.loaded = True
        ready = [n for n, e in state.models.items() if e.state == ModelState.READY]
        logger.info("serving %d model(s) from %s: %s", len(ready), settings.model_repo, ready)
        async with anyio.create_task_group() as tasks:
            if settings.model_poll_interval_s > 0:
                tasks.start_soon(manager.poll_forever, settings.model_poll_interval_s)
            yield
            tasks.cancel_scope.cancel()
        await state.engines.close()
        if tracer is not None:
            await anyio.to_thread.run_sync(tracer.shutdown)

    app = FastAPI(
        title="polyprobe",
        version=__version__,
        summary="Multilingual predictions from ONNX Runtime, with live robustness probing",
        lifespan=lifespan,
    )
    app.state.service = state
    app.state.model_manager = manager
    app.include_router(router)
    app.include_router(probe_router)
    app.include_router(v2_router)
    app.include_router(admin_router)
    app.add_middleware(UnexpectedErrorMiddleware, metrics=metrics)
    app.add_middleware(AccessMiddleware, policy=access_policy(settings), metrics=metrics)
    # Outside the access checks, so browsers' preflight requests are answered without a key.
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type"],
        )
    app.add_middleware(
        RequestMetricsMiddleware, metrics=metrics, tracer=tracer, log_inputs=settings.log_inputs
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.error_type).inc()
        return _error_response(request, exc.body()["error"], exc.status_code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, details = _validation_message(exc)
        error_type = "malformed_body" if status == 400 else "invalid_input"
        metrics.errors.labels(error_type).inc()
        body: dict[str, object] = {"type": error_type, "message": message}
        if details:
            body["details"] = details
        return _error_response(request, body, status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "not_found" if exc.status_code == 404 else f"http_{exc.status_code}"
        metrics.errors.labels(error_type).inc()
        message = (
            f"no route {request.method} {request.url.path}: see /docs for the API"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return _error_response(
            request, {"type": error_type, "message": message}, exc.status_code, exc.headers
        )

    return app
