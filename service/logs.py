"""Logging: one JSON object per line when asked for (log shippers parse it), plain text otherwise.

Request logs carry a request id, the route template, status and duration (and the trace id when
tracing is on); the inputs only when POLYPROBE_LOG_INPUTS asks for them.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = "polyprobe.access"
# POLYPROBE_LOG_INPUTS: enough of a text to recognise it, and a bound on the line that a probe of
# thousands of inputs would otherwise make.
LOGGED_TEXT_CHARS = 200
LOGGED_INPUTS = 64
_TEXT_FIELDS = ("text", "text_pair")
# A caller's id is echoed only when it is short and harmless in logs and headers.
_CALLER_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(caller_supplied: str | None) -> str:
    if caller_supplied and _CALLER_REQUEST_ID.match(caller_supplied):
        return caller_supplied
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The plain format; an access line that carries inputs shows them after its message."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and "inputs" in fields:
            line += " inputs=" + json.dumps(fields["inputs"], ensure_ascii=False)
        return line


def clip_text(text: str) -> str:
    """`text` cut to LOGGED_TEXT_CHARS characters, the cut marked with how much went."""
    if len(text) <= LOGGED_TEXT_CHARS:
        return text
    return f"{text[:LOGGED_TEXT_CHARS]}…[+{len(text) - LOGGED_TEXT_CHARS} chars]"


def logged_inputs(body: bytes, v2_header_length: str | None = None) -> dict[str, Any]:
    """Access log fields with the texts of a request body: `inputs` (one {"text", "text_pair"}
    object per input, clipped) and `inputs_not_logged` beyond LOGGED_INPUTS; none for a body
    that carries no texts.

    Read from the raw body, so a request refused for its inputs shows them too. Handles v1's
    `inputs[].text`/`text_pair` (predictions and probes) and v2's `text`/`text_pair` tensors,
    as JSON data or binary tensor data (`v2_header_length`: Inference-Header-Content-Length).
    """
    header, binary = body, b""
    if v2_header_length is not None and v2_header_length.isdigit():
        split = int(v2_header_length)
        header, binary = body[:split], body[split:]
    try:
        request = json.loads(header)
    except (ValueError, RecursionError):  # not JSON, or nested too deep: nothing to log
        return {}
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or not inputs:
        return {}
    items = [item for item in inputs if isinstance(item, dict)]
    if items and all("name" in item for item in items):
        rows = _v2_rows(items, binary)
    else:
        rows = [
            {f: item[f] for f in _TEXT_FIELDS if isinstance(item.get(f), str)} for item in items
        ]
    rows = [row for row in rows if row]
    if not rows:
        return {}
    fields: dict[str, Any] = {
        "inputs": [{f: clip_text(t) for f, t in row.items()} for row in rows[:LOGGED_INPUTS]]
    }
    if len(rows) > LOGGED_INPUTS:
        fields["inputs_not_logged"] = len(rows) - LOGGED_INPUTS
    return fields


def _v2_rows(tensors: list[dict[str, Any]], binary: bytes) -> list[dict[str, str]]:
    columns: dict[str, list[str]] = {}
    offset = 0
    for tensor in tensors:
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if isinstance(size, int) and size >= 0:
            values = _bytes_elements(binary[offset : offset + size])
            offset += size
        else:
            data = tensor.get("data")
            rows = data if isinstance(data, list) else []
            # shape [N, 1] nests each element in a list of its own
            values = [
                value
                for row in rows
                for value in (row if isinstance(row, list) else [row])
                if isinstance(value, str)
            ]
        if tensor["name"] in _TEXT_FIELDS:
            columns[tensor["name"]] = values
    count = max((len(values) for values in columns.values()), default=0)
    return [
        {name: values[i] for name, values in columns.items() if i < len(values)}
        for i in range(count)
    ]


def _bytes_elements(blob: bytes) -> list[str]:
    """The elements of a v2 BYTES tensor in binary form: each a 4-byte little-endian length,
    then that many bytes."""
    values = []
    at = 0
    while at + 4 <= len(blob):
        size = int.from_bytes(blob[at : at + 4], "little")
        values.append(blob[at + 4 : at + 4 + size].decode("utf-8", errors="replace"))
        at += 4 + size
    return values


def logging_config(level: str, log_format: str) -> dict[str, Any]:
    """A dictConfig for polyprobe's and uvicorn's loggers alike (uvicorn takes it as log_config)."""
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"()": f"{__name__}.TextFormatter", "fmt": "%(levelname)s %(name)s: %(message)s"}
    )
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {
            # uvicorn's own access lines would duplicate polyprobe.access (which has request ids).
            "uvicorn.access": {"level": "WARNING"},
            "uvicorn": {"level": level.upper(), "propagate": True},
            "uvicorn.error": {"level": level.upper(), "propagate": True},
        },
    }
