"""Errors the API returns on purpose, each with its HTTP status and a message that says what to fix."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status_code = 500
    error_type = "internal"

    def __init__(
        self,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidInput(ApiError):
    status_code = 422
    error_type = "invalid_input"


class PayloadTooLarge(ApiError):
    status_code = 413
    error_type = "payload_too_large"


class ModelNotFound(ApiError):
    status_code = 404
    error_type = "model_not_found"


class ModelUnavailable(ApiError):
    status_code = 503
    error_type = "model_unavailable"


class ModelReplaced(ApiError):
    """A newer version of the model was swapped in while a request (a probe's later batches)
    still used the old one; mixing versions in one answer would misattribute it."""

    status_code = 409
    error_type = "model_replaced"


class Overloaded(ApiError):
    """The model's queue holds more tokens than POLYPROBE_MAX_QUEUE_TOKENS: come back later."""

    status_code = 429
    error_type = "overloaded"


class DeadlineExceeded(ApiError):
    """The answer could not be ready within POLYPROBE_REQUEST_TIMEOUT_MS; a late one is useless."""

    status_code = 503
    error_type = "deadline_exceeded"


class ClientClosedRequest(ApiError):
    """The client went away while its inputs waited; nobody reads this answer (nginx's 499)."""

    status_code = 499
    error_type = "client_closed_request"


def openapi_error_responses(*documented: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entries that document a route's error statuses in the OpenAPI schema."""
    return {status: {"description": text, "model": None} for status, text in documented}
