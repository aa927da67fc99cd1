"""Operator endpoints. Glue only; behind the API key like every non-health route (service.access)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.errors import ModelNotFound, openapi_error_responses
from service.model_manager import ModelManager, NoSuchModel

admin_router = APIRouter(tags=["admin"])


def model_manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.model_manager
    return manager


@admin_router.post(
    "/admin/models/{model}/reload",
    responses=openapi_error_responses(
        (401, "API keys are configured and the bearer token is missing or wrong"),
        (404, "No such model directory in the repository"),
        (422, "The newest version is broken and was refused; the served version is unchanged"),
    ),
    summary="Load the model's newest version from the repository and swap it in",
)
async def reload_model(model: str, request: Request) -> JSONResponse:
    try:
        outcome = await model_manager(request).reload(model)
    except NoSuchModel as exc:
        raise ModelNotFound(str(exc)) from exc
    body: dict[str, object] = {
        "model": outcome.model,
        "result": outcome.result,
        "served_version": outcome.served_version,
        "previous_version": outcome.previous_version,
        "tried_version": outcome.tried_version,
    }
    if outcome.result == "refused":
        kept = (
            f"version {outcome.served_version} keeps serving"
            if outcome.served_version
            else "the model does not serve"
        )
        body["error"] = {
            "type": "model_refused",
            "message": f"version {outcome.tried_version} refused: {outcome.error}; {kept}",
        }
        return JSONResponse(body, status_code=422)
    return JSONResponse(body)
