"""SIGTERM to a real server with requests in flight: it stops accepting connections, answers every
accepted request within the shutdown deadline, cuts what would run past it, and exits 0."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server import RunningServer, serve

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


def long_probe(inputs: int, samples: int) -> dict[str, object]:
    """Thousands of perturbed inputs: seconds of work on the demo model, on any machine."""
    return PROBE | {
        "inputs": [
            PAIR | {"id": str(i), "label": "paraphrase", "lang": "de"} for i in range(inputs)
        ],
        "perturbations": [{"family": "char_swap", "severity": 0.3, "samples": samples}],
    }


def start_in_thread(
    server: RunningServer, body: dict[str, object]
) -> tuple[threading.Thread, list[object]]:
    """POST the probe from a thread; its outcome ((response, when) or the exception) lands in the
    list."""
    outcome: list[object] = []

    def call() -> None:
        try:
            with httpx.Client(base_url=server.base_url, timeout=300) as client:
                response = client.post("/v1/models/demo/probe", json=body)
            outcome.append((response, time.monotonic()))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, outcome


def wait_until_in_flight(server: RunningServer) -> None:
    deadline = time.monotonic() + 120
    with server.client() as client:
        while time.monotonic() < deadline:
            for family in text_string_to_metric_families(client.get("/metrics").text):
                if family.name == "polyprobe_in_flight_requests" and any(
                    sample.value >= 1 for sample in family.samples
                ):
                    return
            time.sleep(0.02)
    raise AssertionError("the probe never reached the batcher")


def test_after_sigterm_new_connections_are_refused_while_accepted_work_finishes(
    demo_bundle: Path, tmp_path: Path
) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    env = {"POLYPROBE_MAX_PROBE_EVALUATIONS": "10000"}
    with serve(tmp_path, env) as server:
        thread, outcome = start_in_thread(server, long_probe(400, 10))
        wait_until_in_flight(server)
        server.process.send_signal(signal.SIGTERM)
        refused_at = None
        deadline = time.monotonic() + 60
        while refused_at is None and time.monotonic() < deadline:
            try:
                httpx.get(f"{server.base_url}/healthz", timeout=5)
            except httpx.ConnectError:
                refused_at = time.monotonic()
        thread.join(timeout=300)
        exit_code = server.process.wait(timeout=60)
        log = server.log_text()

    assert refused_at is not None, f"new connections were still accepted after SIGTERM\n{log}"
    assert len(outcome) == 1 and isinstance(outcome[0], tuple), (outcome, log)
    response, answered_at = outcome[0]
    assert response.status_code == 200, log
    assert answered_at > refused_at, "the probe must still have been running when the door closed"
    assert exit_code == 0, log


def test_work_past_the_shutdown_deadline_is_answered_503_and_the_server_exits_zero(
    demo_bundle: Path, tmp_path: Path
) -> None:
    shutil.copytree(demo_bundle, tmp_path / "demo" / "1")
    env = {"POLYPROBE_MAX_PROBE_EVALUATIONS": "40000", "POLYPROBE_SHUTDOWN_TIMEOUT_S": "1"}
    with serve(tmp_path, env) as server:
        thread, outcome = start_in_thread(server, long_probe(2000, 20))
        wait_until_in_flight(server)
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=120)
        thread.join(timeout=60)
        log = server.log_text()

    assert exit_code == 0, log
    assert "timeout graceful shutdown exceeded" in log, log
    assert len(outcome) == 1 and isinstance(outcome[0], tuple), (outcome, log)
    response, _ = outcome[0]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "shutting_down"
    assert response.headers["retry-after"] == "1"
    assert "Exception in ASGI application" not in log, log
