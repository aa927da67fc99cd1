"""Structured logs of the real server: JSON lines with request ids; inputs only when asked for."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from service.logs import LOGGED_TEXT_CHARS
from tests.integration.server import serve

pytestmark = pytest.mark.integration

SECRET_TEXT = "Geheimnis-7f3a: dieser Satz darf nie im Log stehen."


def test_json_logs_carry_request_ids_and_never_the_inputs(
    demo_bundle: Path, tmp_path: Path
) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    with serve(tmp_path, env={"POLYPROBE_LOG_FORMAT": "json"}) as server:
        with server.client() as client:
            echoed = client.post(
                "/v1/models/demo/predict",
                json={"inputs": [{"text": SECRET_TEXT, "text_pair": SECRET_TEXT}]},
                headers={"x-request-id": "req-42.a"},
            )
            generated = client.get("/v1/models", headers={"x-request-id": "bad id\twith tab"})
        assert echoed.status_code == 200
        assert echoed.headers["x-request-id"] == "req-42.a"
        fresh = generated.headers["x-request-id"]
        assert fresh != "bad id\twith tab" and len(fresh) == 32
        time.sleep(0.5)
        lines = [line for line in server.log_text().splitlines() if line.strip()]

    entries = [json.loads(line) for line in lines if line.startswith("{")]
    assert entries and len(entries) == len(lines), "every log line is one JSON object"
    access = {
        entry["request_id"]: entry for entry in entries if entry["logger"] == "polyprobe.access"
    }
    assert access["req-42.a"]["route"] == "/v1/models/{model}/predict"
    assert access["req-42.a"]["status"] == 200
    assert access["req-42.a"]["duration_ms"] > 0
    assert access[fresh]["route"] == "/v1/models"
    assert SECRET_TEXT not in server.log_text()


def test_log_inputs_puts_clipped_texts_in_the_access_line(
    demo_bundle: Path, tmp_path: Path
) -> None:
    http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (dev extra)")
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    long_text = "Ein sehr langer Satz, der im Log gekürzt wird. " * 10  # 470 characters
    env = {"POLYPROBE_LOG_FORMAT": "json", "POLYPROBE_LOG_INPUTS": "true"}
    with serve(tmp_path, env=env) as server:
        with server.client() as client:
            v1 = client.post(
                "/v1/models/demo/predict",
                json={"inputs": [{"text": SECRET_TEXT, "text_pair": long_text}]},
                headers={"x-request-id": "v1-inputs"},
            )
        # The Triton client sends binary tensor data: the texts are decoded from it too.
        triton = http.InferenceServerClient(server.base_url.removeprefix("http://"))
        tensors = []
        for name, value in (("text", "Der Zug fährt um acht."), ("text_pair", "El perro come.")):
            tensor = http.InferInput(name, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([value], dtype=object), binary_data=True)
            tensors.append(tensor)
        v2 = triton.infer("demo", tensors, headers={"x-request-id": "v2-inputs"})
        triton.close()
        assert v1.status_code == 200 and v2.as_numpy("label") is not None
        time.sleep(0.5)
        lines = [line for line in server.log_text().splitlines() if line.startswith("{")]

    access = {
        entry["request_id"]: entry
        for entry in map(json.loads, lines)
        if entry["logger"] == "polyprobe.access"
    }
    cut = len(long_text) - LOGGED_TEXT_CHARS
    assert access["v1-inputs"]["inputs"] == [
        {"text": SECRET_TEXT, "text_pair": f"{long_text[:LOGGED_TEXT_CHARS]}…[+{cut} chars]"}
    ]
    assert access["v2-inputs"]["inputs"] == [
        {"text": "Der Zug fährt um acht.", "text_pair": "El perro come."}
    ]
    assert long_text not in "".join(lines), "the long text is only ever logged clipped"
