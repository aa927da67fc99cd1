"""HTTP routes of the native v1 API and the operational endpoints. Glue only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service.errors import ModelNotFound, ModelUnavailable, openapi_error_responses
from service.inference import validate_inputs
from service.repository import LoadedModel, ModelEntry, ModelState
from service.schemas import ModelDetail, ModelList, ModelSummary, PredictRequest, PredictResponse
from service.state import ServiceState

router = APIRouter()

_ERRORS = openapi_error_responses(
    (404, "Unknown model"),
    (413, "Too many inputs, text too long, or over the max sequence length in reject mode"),
    (422, "Invalid input; the message says which input and what to change"),
    (429, "The model's queue is full (POLYPROBE_MAX_QUEUE_TOKENS); see Retry-After"),
    (503, "The model failed to load, or no answer within POLYPROBE_REQUEST_TIMEOUT_MS"),
)


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _entry(request: Request, name: str) -> ModelEntry:
    models = _state(request).models
    entry = models.get(name)
    if entry is None:
        known = ", ".join(sorted(models)) or "none"
        raise ModelNotFound(f"no model named {name!r}; this server has: {known}")
    return entry


def ready_model(request: Request, name: str) -> LoadedModel:
    entry = _entry(request, name)
    if entry.model is None:
        raise ModelUnavailable(f"model {name!r} is not serving: {entry.error}")
    return entry.model


def _summary(request: Request, entry: ModelEntry) -> dict[str, Any]:
    model = entry.model
    manager = request.app.state.model_manager
    return {
        "name": entry.name,
        "state": entry.state.value,
        "versions": entry.versions,
        "served_version": model.version if model else None,
        "task": model.manifest.task if model else None,
        "labels": model.manifest.labels if model else None,
        "precision": model.variant.precision if model else None,
        "provider": model.backend.provider if model else None,
        "error": entry.error,
        "refused_version": entry.refused_version,
        "draining_versions": manager.draining_versions(entry.name),
    }


@router.post(
    "/v1/models/{model}/predict",
    response_model=PredictResponse,
    responses=_ERRORS,
    summary="Classify texts or text pairs",
)
async def predict(model: str, body: PredictRequest, request: Request) -> Response:
    """Stage times (milliseconds) come back as x-tokenize-time, x-queue-time, x-inference-time,
    with x-batch-size the largest batch that carried one of the inputs."""
    state = _state(request)
    loaded = ready_model(request, model)
    pairs = validate_inputs(body.inputs, loaded, state.settings)
    state.metrics.inputs_per_request.labels(loaded.name).observe(len(pairs))

    async def until_disconnected() -> None:
        # The body is read, so the next ASGI message is the disconnect (or the end of the
        # response, when the watch is cancelled first).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result = await state.engines.get(loaded).predict(pairs, until_disconnected=until_disconnected)
    answer = PredictResponse(
        model=loaded.name, version=loaded.version, predictions=result.predictions
    )
    # Serialised here, once: returned as a model, FastAPI would validate it again first.
    return Response(
        answer.model_dump_json(), media_type="application/json", headers=result.times.headers()
    )


@router.get("/v1/models", response_model=ModelList, summary="Models in the repository")
async def list_models(request: Request) -> ModelList:
    entries = _state(request).models.values()
    return ModelList(models=[ModelSummary(**_summary(request, e)) for e in entries])


@router.get(
    "/v1/models/{model}",
    response_model=ModelDetail,
    responses={404: _ERRORS[404]},
    summary="One model, with the bundle manifest of the served version",
)
async def get_model(model: str, request: Request) -> ModelDetail:
    entry = _entry(request, model)
    manifest = entry.model.manifest.model_dump(mode="json") if entry.model else None
    return ModelDetail(**_summary(request, entry), manifest=manifest)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded (all of them, in strict mode)")
async def readyz(request: Request) -> JSONResponse:
    is_ready, models = readiness(_state(request))
    body: dict[str, Any] = {"status": "ready" if is_ready else "not_ready", "models": models}
    refused = {
        e.name: e.refused_version for e in _state(request).models.values() if e.refused_version
    }
    if refused:
        body["refused_versions"] = refused
    return JSONResponse(body, status_code=200 if is_ready else 503)


def readiness(state: ServiceState) -> tuple[bool, dict[str, str]]:
    """Whether to take traffic, and each model's state (shared by /readyz and /v2/health/ready)."""
    models = {name: entry.state.value for name, entry in state.models.items()}
    ready = [name for name, s in models.items() if s == ModelState.READY]
    if state.settings.strict_readiness:
        return state.loaded and bool(models) and len(ready) == len(models), models
    return state.loaded and bool(ready), models


@router.get("/metrics", summary="Prometheus text exposition", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
