"""The server-sent-events stream of a probe job, read from the real server with httpx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve
from tests.integration.test_probe import probe_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("sse-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    with serve(repo, {"POLYPROBE_PROBE_BOOTSTRAP_RESAMPLES": "200"}) as running:
        yield running


def events(client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    received: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", f"/v1/probe/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                received.append((name, json.loads(line.removeprefix("data: "))))
    return received


def test_the_stream_reports_monotonic_progress_then_the_result(server: RunningServer) -> None:
    with server.client() as client:
        job = client.post("/v1/probe/jobs", json={**probe_body(), "model": "demo"}).json()
        received = events(client, job["id"])
        final = client.get(f"/v1/probe/jobs/{job['id']}").json()
    *progress, (last, data) = received
    assert all(name == "progress" for name, _ in progress)
    done = [p["evaluations_done"] for _, p in progress]
    assert done == sorted(done)
    assert last == final["status"] == "succeeded"
    assert data["location"] == f"/v1/probe/jobs/{job['id']}"


def test_a_cancelled_jobs_stream_ends_with_cancelled(server: RunningServer) -> None:
    big = probe_body(perturbations=[{"family": "char_swap", "severity": 0.2, "samples": 50}])
    with server.client() as client:
        job = client.post("/v1/probe/jobs", json={**big, "model": "demo"}).json()
        assert client.delete(f"/v1/probe/jobs/{job['id']}").json()["status"] == "cancelled"
        assert events(client, job["id"])[-1][0] == "cancelled"
        assert client.get("/v1/probe/jobs/nope/events").status_code == 404
