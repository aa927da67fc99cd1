"""Versions swapped in without downtime: by polling, by the admin endpoint, and draining the old one."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.settings import Settings
from tests.integration.conftest import copy_bundle
from tests.integration.faults import Fault, faulty_factory
from tests.integration.inprocess_server import serve_in_thread
from tests.integration.server import serve

pytestmark = pytest.mark.integration

KEY = "polyprobe-reload-key-0123456789"
PAIR = {"text": "Die Katze schläft.", "text_pair": "Le chat dort."}


def wait_until(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    """Poll until `check()` is truthy; the timeout only bounds a broken run, nothing is timed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def drop_in(demo_bundle: Path, repo: Path, staging: Path, version: str) -> Path:
    """Copy a version beside the repository, then rename it in: the poller never sees half a copy."""
    staged = copy_bundle(demo_bundle, staging, "demo", version)
    target = repo / "demo" / version
    staged.rename(target)
    return target


def corrupt(bundle: Path) -> None:
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))


def served_version(client: httpx.Client, **headers: str) -> str:
    response = client.post("/v1/models/demo/predict", json={"inputs": [PAIR]}, headers=headers)
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


def reload_counts(client: httpx.Client) -> dict[str, float]:
    families = text_string_to_metric_families(client.get("/metrics").text)
    family = next(f for f in families if f.name == "polyprobe_model_reloads")
    return {
        s.labels["result"]: s.value
        for s in family.samples
        if s.name.endswith("_total") and s.labels["model"] == "demo"
    }


def test_polling_swaps_new_versions_in_and_refuses_broken_ones(
    demo_bundle: Path, tmp_path: Path
) -> None:
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    copy_bundle(demo_bundle, repo, "demo", "1")
    with (
        serve(repo, {"POLYPROBE_MODEL_POLL_INTERVAL_S": "0.2"}) as server,
        server.client() as client,
    ):
        assert served_version(client) == "1"
        drop_in(demo_bundle, repo, staging, "2")
        wait_until(lambda: client.get("/v1/models/demo").json()["served_version"] == "2", "v2")
        assert served_version(client) == "2"

        broken = copy_bundle(demo_bundle, staging, "demo", "3")
        corrupt(broken)
        broken.rename(repo / "demo" / "3")
        detail = wait_until(
            lambda: (d := client.get("/v1/models/demo").json())["refused_version"] == "3" and d,
            "the refusal of v3",
        )
        assert (detail["state"], detail["served_version"]) == ("ready", "2")
        assert detail["versions"] == ["1", "2", "3"]
        assert "sha256 mismatch for model.onnx" in detail["error"]
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["refused_versions"] == {"demo": "3"}
        assert served_version(client) == "2"

        # Repairing the refused version in place (a copy that finished late) is noticed.
        shutil.copyfile(demo_bundle / "model.onnx", repo / "demo" / "3" / "model.onnx")
        wait_until(lambda: client.get("/v1/models/demo").json()["served_version"] == "3", "v3")
        assert served_version(client) == "3"
        assert client.get("/v1/models/demo").json()["refused_version"] is None
        info = [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("polyprobe_model_info{")
        ]
        assert len(info) == 1 and 'version="3"' in info[0], info
        # v3 was refused once however many polls saw it broken; startup's v1 is no reload.
        assert reload_counts(client) == {"loaded": 2.0, "refused": 1.0}
    log = server.log_text()
    assert "refusing model demo version 3" in log
    assert "model demo: version 2 keeps serving" in log


def test_admin_reload_is_keyed_and_refuses_a_broken_version(
    demo_bundle: Path, tmp_path: Path
) -> None:
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    copy_bundle(demo_bundle, repo, "demo", "1")
    auth = {"authorization": f"Bearer {KEY}"}
    with serve(repo, {"POLYPROBE_API_KEYS": KEY}) as server, server.client() as client:
        drop_in(demo_bundle, repo, staging, "2")
        # No polling configured: nothing changes until someone asks.
        assert served_version(client, **auth) == "1"
        assert client.post("/admin/models/demo/reload").status_code == 401

        loaded = client.post("/admin/models/demo/reload", headers=auth)
        assert loaded.status_code == 200, loaded.text
        body = loaded.json()
        assert (body["result"], body["served_version"], body["previous_version"]) == (
            "loaded",
            "2",
            "1",
        )
        assert served_version(client, **auth) == "2"
        again = client.post("/admin/models/demo/reload", headers=auth).json()
        assert again["result"] == "unchanged"

        (drop_in(demo_bundle, repo, staging, "3") / "tokenizer.json").unlink()
        refused = client.post("/admin/models/demo/reload", headers=auth)
        assert refused.status_code == 422
        message = refused.json()["error"]["message"]
        assert "version 3 refused" in message
        assert "missing file tokenizer.json" in message
        assert "version 2 keeps serving" in message
        assert served_version(client, **auth) == "2"

        absent = client.post("/admin/models/absent/reload", headers=auth)
        assert absent.status_code == 404
        assert "no versions of model 'absent'" in absent.json()["error"]["message"]
        dots = client.post("/admin/models/%2E%2E/reload", headers=auth)
        assert dots.status_code == 404
        assert "is not a model name" in dots.json()["error"]["message"]


def test_in_flight_request_finishes_on_the_version_it_started_on(
    demo_bundle: Path, tmp_path: Path
) -> None:
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    copy_bundle(demo_bundle, repo, "demo", "1")
    old = Fault()
    settings = Settings(model_repo=repo, request_timeout_ms=0)
    app = create_app(settings, backend_factory=faulty_factory({"demo/1": old}))
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=120) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        old.stall()
        in_flight = pool.submit(served_version, client)
        assert old.entered.wait(timeout=120), "the request never reached version 1's session"

        drop_in(demo_bundle, repo, staging, "2")
        swapped = client.post("/admin/models/demo/reload")
        assert swapped.json()["result"] == "loaded", swapped.text
        assert served_version(client) == "2"
        assert client.get("/v1/models/demo").json()["draining_versions"] == ["1"]

        old.heal()
        assert in_flight.result(timeout=120) == "1"
        wait_until(
            lambda: client.get("/v1/models/demo").json()["draining_versions"] == [],
            "version 1 to drain",
        )


def test_a_probe_that_outlives_its_version_stops_and_the_new_version_keeps_its_batcher(
    demo_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.test_probe import probe_body

    repo, staging = tmp_path / "repo", tmp_path / "staging"
    copy_bundle(demo_bundle, repo, "demo", "1")
    old = Fault()
    settings = Settings(model_repo=repo, request_timeout_ms=0, probe_batch_size=2)
    app = create_app(settings, backend_factory=faulty_factory({"demo/1": old}))
    probe = probe_body(perturbations=[{"family": "char_swap", "severity": 0.2, "samples": 3}])
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        old.stall()
        job = client.post("/v1/probe/jobs", json={**probe, "model": "demo"}).json()
        assert old.entered.wait(timeout=120), "the probe never reached version 1's session"

        drop_in(demo_bundle, repo, staging, "2")
        assert client.post("/admin/models/demo/reload").json()["result"] == "loaded"
        old.heal()
        finished = wait_until(
            lambda: (
                (body := client.get(f"/v1/probe/jobs/{job['id']}").json())["status"]
                in {"succeeded", "failed"}
                and body
            ),
            "the probe job to finish",
        )
        assert finished["status"] == "failed"
        assert finished["error"]["type"] == "model_replaced"
        assert "version 1 was replaced by version 2" in finished["error"]["message"]
        assert finished["progress"]["evaluations_done"] > 0, "its first batch ran on version 1"

        caplog.clear()
        for _ in range(3):
            assert served_version(client) == "2"
        assert "serves without warm-up" not in caplog.text, "version 2 kept its warmed batcher"
        rerun = client.post("/v1/models/demo/probe", json=probe)
        assert rerun.status_code == 200, rerun.text
