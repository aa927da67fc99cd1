"""SIGTERM to a real server with requests in flight: every accepted request is answered, exit 0."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.server import serve

pytestmark = pytest.mark.integration

PAIR = {"text": "Die Katze schläft im Garten.", "text_pair": "Le chat dort dans le jardin."}
# Heavy enough (hundreds of perturbed inputs) to still be running when the signal arrives.
PROBE = {
    "inputs": [PAIR | {"id": str(i), "label": "paraphrase", "lang": "de"} for i in range(60)],
    "perturbations": [{"family": "char_swap", "severity": 0.3, "samples": 8}],
    "seed": 3,
}


def test_sigterm_finishes_in_flight_work_then_exits_zero(demo_bundle: Path, tmp_path: Path) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()

    with serve(tmp_path) as server:

        def call(path: str, body: dict[str, object]) -> None:
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                status = client.post(path, json=body).status_code
            with lock:
                answers.append((status, time.monotonic()))

        requests = [("/v1/models/demo/probe", PROBE)] * 2 + [
            ("/v1/models/demo/predict", {"inputs": [PAIR] * 64})
        ] * 4
        threads = [threading.Thread(target=call, args=request) for request in requests]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=120)
        exit_code = server.process.wait(timeout=60)
        log = server.log_text()

    assert [status for status, _ in answers] == [200] * len(requests), log
    assert any(done > signalled for _, done in answers), "nothing was in flight at SIGTERM"
    assert exit_code == 0, log
    assert "Waiting for application shutdown" in log or "Shutting down" in log
