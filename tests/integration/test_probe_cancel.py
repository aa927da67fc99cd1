"""A cancelled probe job releases its work: its remaining batches never reach the model, and the
probe capacity it held goes to the next probe. Real server, demo bundle, one probe worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve
from tests.integration.test_probe import PROBE, metric_samples, probe_body

pytestmark = pytest.mark.integration

BATCH = 4  # small probe batches: a job of ~1000 evaluations is ~250 model calls
SETTLE_READS = 5  # consecutive equal reads, 0.3 s apart, before the count is taken as settled


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("cancel-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    env = {
        "POLYPROBE_PROBE_BATCH_SIZE": str(BATCH),
        "POLYPROBE_PROBE_WORKER_THREADS": "1",
        "POLYPROBE_PROBE_BOOTSTRAP_RESAMPLES": "200",
    }
    with serve(repo, env) as running:
        yield running


def model_calls(client: httpx.Client) -> float:
    """Batches the demo model has run, over predictions and probes alike."""
    samples = metric_samples(client, "polyprobe_inference_duration_seconds_count")
    return sum(value for labels, value in samples if labels["model"] == "demo")


def poll(client: httpx.Client, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/probe/jobs/{job_id}").json()
    return body


def test_a_cancelled_job_runs_none_of_its_remaining_batches(server: RunningServer) -> None:
    big = probe_body(perturbations=[{"family": "char_swap", "severity": 0.2, "samples": 60}])
    with server.client() as client:
        job = client.post("/v1/probe/jobs", json={**big, "model": "demo"}).json()
        deadline = time.monotonic() + 120
        while poll(client, job["id"])["progress"]["evaluations_done"] < 8 * BATCH:
            assert time.monotonic() < deadline, "the job never got going"
            time.sleep(0.05)
        running = poll(client, job["id"])
        assert running["status"] == "running"
        total = running["progress"]["evaluations_total"]
        assert total > 1000

        cancelled = client.delete(f"/v1/probe/jobs/{job['id']}").json()
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None

        # The batch already in the model when the job was cancelled may finish; then nothing.
        reads = [model_calls(client)]
        while len(reads) < SETTLE_READS or len(set(reads[-SETTLE_READS:])) > 1:
            assert len(reads) < 100, f"model calls still advancing after the cancel: {reads}"
            time.sleep(0.3)
            reads.append(model_calls(client))
        settled = reads[-1]
        after = poll(client, job["id"])
        done = after["progress"]["evaluations_done"]
        # Each model call is one batch of at most BATCH inputs, so the job stopped with most of
        # its ~250 calls never made.
        assert after["status"] == "cancelled" and done < total // 2
        assert (total - done) / BATCH > 100

        # The one probe worker is free: a new probe runs, and its calls are the only new ones.
        small = probe_body(perturbations=[{"family": "char_swap", "severity": 0.2}])
        response = client.post(PROBE, json=small)
        assert response.status_code == 200, response.text
        evaluations = response.json()["evaluations"]
        new_inputs = evaluations["clean"] + evaluations["perturbed"]
        calls = model_calls(client) - settled
        assert 0 < calls <= new_inputs  # batches of the new probe only (never more than inputs)
        assert poll(client, job["id"])["progress"]["evaluations_done"] == done
