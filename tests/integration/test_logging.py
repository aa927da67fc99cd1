"""Structured logs of the real server: JSON lines with request ids, and no inputs in them."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

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
