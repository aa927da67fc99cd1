"""Open Inference Protocol v2 (KServe / Triton REST) over the same models and predictions as /v1.

Text goes in as BYTES tensors (`text`, plus `text_pair` for pair models) of shape [N] or [N, 1];
out come `probabilities` (FP32 [N, labels], in the manifest's label order) and `label` (BYTES [N]).
Tensors may travel as JSON or with the binary tensor data extension, which is what Triton clients
use by default. Errors are `{"error": "<message>"}`, as the protocol has it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from polyprobe import __version__
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.errors import (
    ApiError,
    InvalidInput,
    ModelNotFound,
    ModelUnavailable,
    PayloadTooLarge,
    openapi_error_responses,
)
from service.inference import validate_inputs
from service.repository import LoadedModel, is_version
from service.routes import readiness
from service.schemas import Prediction, TextInput
from service.state import ServiceState

PREFIX = "/v2"
TEXT, TEXT_PAIR = "text", "text_pair"
PROBABILITIES, LABEL = "probabilities", "label"
OUTPUTS = (PROBABILITIES, LABEL)
HEADER_LENGTH = "inference-header-content-length"
_LENGTH_PREFIX = struct.Struct("<I")


def is_v2_path(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class BadRequest(ApiError):
    status_code = 400
    error_type = "invalid_request"


class TensorInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=2)
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: list[Any] | None = Field(
        default=None, description="strings, flat or nested; absent when sent as binary data"
    )


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def _inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its $defs inlined, to embed in the OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


v2_router = APIRouter(prefix=PREFIX, tags=["open-inference-protocol-v2"])

_ERRORS = openapi_error_responses(
    (400, "Malformed request or tensors; the message says what to change"),
    (404, "Unknown model or version (or a version that is not the served one)"),
    (413, "More inputs or longer texts than the limits allow"),
    (503, "The model is known but does not serve"),
)


def _state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


def _served(request: Request, name: str, version: str | None) -> LoadedModel:
    entry = _state(request).models.get(name)
    if entry is None:
        raise ModelNotFound(f"unknown model {name!r}; see GET /v1/models for the models served")
    if version is not None and (not is_version(version) or version not in entry.versions):
        raise ModelNotFound(
            f"model {name!r} has no version {version!r}; the repository has versions "
            f"{', '.join(entry.versions)}"
        )
    if entry.model is None:
        raise ModelUnavailable(f"model {name!r} is not serving: {entry.error}")
    if version is not None and version != entry.model.version:
        raise ModelNotFound(
            f"version {version} of model {name!r} is not loaded; version "
            f"{entry.model.version} (the newest that loaded) serves"
        )
    return entry.model


def input_names(model: LoadedModel) -> tuple[str, ...]:
    return (TEXT, TEXT_PAIR) if model.manifest.task == "pair-classification" else (TEXT,)


def _metadata(model: LoadedModel, versions: Sequence[str]) -> dict[str, Any]:
    return {
        "name": model.name,
        "versions": list(versions),
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in input_names(model)],
        "outputs": [
            {"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, len(model.manifest.labels)]},
            {"name": LABEL, "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {
            "served_version": model.version,
            "task": model.manifest.task,
            "labels": model.manifest.labels,
        },
    }


@v2_router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "polyprobe", "version": __version__, "extensions": ["binary_tensor_data"]}


@v2_router.get("/health/live", summary="Liveness: the process answers")
async def live() -> dict[str, bool]:
    return {"live": True}


@v2_router.get("/health/ready", summary="Readiness, as /readyz")
async def ready(request: Request) -> JSONResponse:
    is_ready, _ = readiness(_state(request))
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@v2_router.get("/models/{model}", responses=_ERRORS, summary="Model metadata")
async def model_metadata(model: str, request: Request) -> dict[str, Any]:
    loaded = _served(request, model, None)
    return _metadata(loaded, _state(request).models[model].versions)


@v2_router.get(
    "/models/{model}/versions/{version}", responses=_ERRORS, summary="Model version metadata"
)
async def model_version_metadata(model: str, version: str, request: Request) -> dict[str, Any]:
    loaded = _served(request, model, version)
    return _metadata(loaded, _state(request).models[model].versions)


@v2_router.get("/models/{model}/ready", responses=_ERRORS, summary="Model readiness")
async def model_ready(model: str, request: Request) -> dict[str, Any]:
    loaded = _served(request, model, None)
    return {"name": loaded.name, "version": loaded.version, "ready": True}


@v2_router.get(
    "/models/{model}/versions/{version}/ready", responses=_ERRORS, summary="Version readiness"
)
async def model_version_ready(model: str, version: str, request: Request) -> dict[str, Any]:
    loaded = _served(request, model, version)
    return {"name": loaded.name, "version": loaded.version, "ready": True}


_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_schema(InferRequest)}},
    }
}


@v2_router.post(
    "/models/{model}/infer",
    responses=_ERRORS,
    openapi_extra=_INFER_DOC,
    summary="Classify BYTES tensors of texts (and text pairs)",
)
async def infer(model: str, request: Request) -> Response:
    return await _infer(request, model, None)


@v2_router.post(
    "/models/{model}/versions/{version}/infer",
    responses=_ERRORS,
    openapi_extra=_INFER_DOC,
    summary="Classify with a given version (only the served one answers)",
)
async def infer_version(model: str, version: str, request: Request) -> Response:
    return await _infer(request, model, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    state = _state(request)
    raw = await request.body()
    # Resolved after the last await before predicting, so a version swapped in meanwhile is
    # the one used (the previous one drains), never a stale one.
    model = _served(request, name, version)
    header, binary = _split_body(raw, request.headers.get(HEADER_LENGTH))
    body = _parse_header(header)
    outputs = _requested_outputs(body)
    texts = _read_inputs(body, binary, model, state.settings.max_inputs_per_request)
    inputs = [
        TextInput(text=text, text_pair=pair)
        for text, pair in zip(
            texts[TEXT], texts.get(TEXT_PAIR, [None] * len(texts[TEXT])), strict=True
        )
    ]
    try:
        pairs = validate_inputs(inputs, model, state.settings)
    except InvalidInput as exc:
        raise BadRequest(exc.message, details=exc.details) from exc
    state.metrics.inputs_per_request.labels(model.name).observe(len(pairs))
    result = await state.engines.get(model).predict(pairs)
    response = _respond(body, model, result.predictions, outputs)
    # The same stage times as /v1 (x-tokenize-time, x-queue-time, ...): traces and clients see them.
    response.headers.update(result.times.headers())
    return response


def _split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return raw, b""
    if not header_length.isdigit() or not 0 < int(header_length) <= len(raw):
        raise BadRequest(
            f"Inference-Header-Content-Length {header_length!r} must be a number of bytes between "
            f"1 and the body's {len(raw)}"
        )
    split = int(header_length)
    return raw[:split], raw[split:]


def _parse_header(header: bytes) -> InferRequest:
    try:
        raw = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the inference request is not valid JSON ({exc})") from exc
    except RecursionError as exc:  # the body cap still admits millions of nested brackets
        raise BadRequest("the inference request nests too deeply to be a tensor request") from exc
    try:
        return InferRequest.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()
        )
        raise BadRequest(f"invalid inference request: {problems}") from exc


def _bool_parameter(parameters: dict[str, Any], key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be true or false, not {value!r}")
    return value


def _requested_outputs(body: InferRequest) -> dict[str, bool]:
    """Output name -> whether it goes back as binary data."""
    binary_default = _bool_parameter(body.parameters, "binary_data_output", False)
    if body.outputs is None:
        return dict.fromkeys(OUTPUTS, binary_default)
    chosen: dict[str, bool] = {}
    for output in body.outputs:
        if output.name not in OUTPUTS:
            raise BadRequest(
                f"unknown output {output.name!r}; the outputs are {', '.join(OUTPUTS)}"
            )
        if output.name in chosen:
            raise BadRequest(f"output {output.name!r} is requested twice")
        chosen[output.name] = _bool_parameter(output.parameters, "binary_data", binary_default)
    return chosen


def _read_inputs(
    body: InferRequest, binary: bytes, model: LoadedModel, max_inputs: int
) -> dict[str, list[str]]:
    expected = input_names(model)
    texts: dict[str, list[str]] = {}
    offset = 0
    for tensor in body.inputs:
        if tensor.name not in expected:
            raise BadRequest(
                f"unknown input {tensor.name!r}: model {model.name} takes BYTES inputs "
                f"{', '.join(expected)}"
            )
        if tensor.name in texts:
            raise BadRequest(f"input {tensor.name!r} is given twice")
        if tensor.datatype != "BYTES":
            raise BadRequest(
                f"input {tensor.name!r} has datatype {tensor.datatype}; text goes in as BYTES"
            )
        if len(tensor.shape) == 2 and tensor.shape[1] != 1:
            raise BadRequest(
                f"input {tensor.name!r} has shape {tensor.shape}; use [N] or [N, 1] (one text per row)"
            )
        count = tensor.shape[0]
        # Before any data is looked at: a huge declared shape is refused without allocating for it.
        if count > max_inputs:
            raise PayloadTooLarge(
                f"input {tensor.name!r} has {count} elements; the limit is {max_inputs} "
                "(POLYPROBE_MAX_INPUTS_PER_REQUEST): split the request"
            )
        size = tensor.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {tensor.name!r}: binary_data_size must be a byte count")
            if tensor.data is not None:
                raise BadRequest(f"input {tensor.name!r} has both data and binary_data_size")
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {tensor.name!r} declares {size} bytes of binary data but only "
                    f"{len(binary) - offset} follow the JSON header"
                )
            values = _decode_bytes_tensor(tensor.name, binary[offset : offset + size], count)
            offset += size
        elif tensor.data is not None:
            values = _json_strings(tensor.name, tensor.data, count)
        else:
            raise BadRequest(f"input {tensor.name!r} has no data (and no binary_data_size)")
        texts[tensor.name] = values
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes after the JSON header belong to no input's "
            "binary_data_size"
        )
    missing = [name for name in expected if name not in texts]
    if missing:
        raise BadRequest(
            f"model {model.name} needs BYTES inputs {', '.join(expected)}; missing {', '.join(missing)}"
        )
    counts = {name: len(values) for name, values in texts.items()}
    if len(set(counts.values())) > 1:
        raise BadRequest(f"inputs have different numbers of rows: {counts}")
    if not texts[TEXT]:
        raise BadRequest("the inputs hold no texts: send at least one row")
    return texts


def _check_text(name: str, index: int, value: str) -> str:
    if not value:
        raise BadRequest(f"{name}[{index}] is empty: send non-empty texts")
    return value


def _json_strings(name: str, data: list[Any], count: int) -> list[str]:
    flat: list[Any] = []
    for item in data:
        # Row-major: [N] flat, or [N, 1] nested one level.
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    if len(flat) != count:
        raise BadRequest(f"input {name!r} has {len(flat)} elements but its shape says {count}")
    for index, value in enumerate(flat):
        if not isinstance(value, str):
            raise BadRequest(
                f"{name}[{index}] is {type(value).__name__}; BYTES elements in JSON are strings"
            )
        _check_text(name, index, value)
    return flat


def _decode_bytes_tensor(name: str, blob: bytes, count: int) -> list[str]:
    """Triton's BYTES serialisation: each element a little-endian uint32 length, then the bytes."""
    values: list[str] = []
    position = 0
    for index in range(count):
        if position + _LENGTH_PREFIX.size > len(blob):
            raise BadRequest(
                f"binary data of input {name!r} ends after {index} of {count} elements"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(blob, position)
        position += _LENGTH_PREFIX.size
        if position + length > len(blob):
            raise BadRequest(f"{name}[{index}] declares {length} bytes past the end of its data")
        try:
            text = blob[position : position + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"{name}[{index}] is not UTF-8 text ({exc.reason})") from exc
        position += length
        values.append(_check_text(name, index, text))
    if position != len(blob):
        raise BadRequest(
            f"input {name!r} has {len(blob) - position} bytes beyond its {count} elements"
        )
    return values


def _encode_bytes_tensor(values: Sequence[str]) -> bytes:
    parts = []
    for value in values:
        encoded = value.encode("utf-8")
        parts.append(_LENGTH_PREFIX.pack(len(encoded)) + encoded)
    return b"".join(parts)


def _respond(
    body: InferRequest,
    model: LoadedModel,
    predictions: Sequence[Prediction],
    outputs: dict[str, bool],
) -> Response:
    labels = model.manifest.labels
    rows = len(predictions)
    probabilities = [p.probabilities[label] for p in predictions for label in labels]
    names = [p.label for p in predictions]
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, as_binary in outputs.items():
        if name == PROBABILITIES:
            tensor: dict[str, Any] = {
                "name": name,
                "datatype": "FP32",
                "shape": [rows, len(labels)],
            }
            data: list[Any] = probabilities
            blob = struct.pack(f"<{len(probabilities)}f", *probabilities)
        else:
            tensor = {"name": name, "datatype": "BYTES", "shape": [rows]}
            data = names
            blob = _encode_bytes_tensor(names)
        if as_binary:
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = data
        tensors.append(tensor)
    result: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": tensors,
    }
    if body.id is not None:
        result["id"] = body.id
    if not blobs:
        return JSONResponse(result)
    header = json.dumps(result).encode("utf-8")
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
