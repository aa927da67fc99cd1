"""`polyprobe loadtest` against a real server at a small bounded rate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import copy_bundle
from tests.integration.server import RunningServer, serve

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_bundle: Path) -> Iterator[RunningServer]:
    repo = tmp_path_factory.mktemp("loadtest-repo")
    copy_bundle(demo_bundle, repo, "demo", "1")
    with serve(repo) as running:
        yield running


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"id": 0, "sentence1": "Der Hund schläft.", "sentence2": "Der Hund ruht.", "label": 1},
        {"id": 1, "sentence1": "猫は庭にいます。", "sentence2": "犬は駅にいます。", "label": 0},
        {"id": 2, "sentence1": "Кошка спит.", "sentence2": "Кошка спит.", "label": 1},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyprobe", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_open_loop_sweep_reports_client_and_server_views(
    server: RunningServer, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run_cli(
        "--url", server.base_url, "--data", str(pairs_file), "--rate", "5", "10",
        "--requests", "15", "--duration", "20", "--mix", "1:0.5,4:0.5", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "loadtest.json").read_text("utf-8"))
    runs = report["runs"]
    assert [r["offered"] for r in runs] == ["5 req/s open-loop", "10 req/s open-loop"]
    for run in runs:
        assert run["requests"] == 15
        assert run["statuses"] == {"200": 15}
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        # The server saw exactly the requests the client sent, and one inference call each.
        assert run["server"]["polyprobe_request_duration_seconds"]["count"] == 15
        assert run["server"]["polyprobe_inference_duration_seconds"]["count"] == 15
    assert (out / "loadtest.md").read_text("utf-8").count("req/s open-loop") >= 2
    assert (out / "latency_vs_load.png").stat().st_size > 1000


def test_closed_loop_stops_at_the_request_bound(
    server: RunningServer, pairs_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "closed"
    result = run_cli(
        "--url", server.base_url, "--data", str(pairs_file), "--concurrency", "3",
        "--requests", "12", "--duration", "0", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run,) = json.loads((out / "loadtest.json").read_text("utf-8"))["runs"]
    assert run["requests"] == 12
    assert run["offered"] == "3 clients"


def test_remote_targets_need_an_explicit_flag(pairs_file: Path) -> None:
    result = run_cli("--url", "http://192.0.2.1:8000", "--data", str(pairs_file), "--rate", "1")
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr
