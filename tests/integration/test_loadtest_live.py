"""`polyprobe loadtest` against a real server at a small bounded rate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.payloads import InputsMix, PayloadFactory, read_pairs
from loadtest.runner import OUTSTANDING_LIMIT, LoadShape, run_load
from loadtest.session import measure, predict_path
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
        "--warmup", "2", "--slo-ms", "5000",
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
        assert run["inputs"] >= 15
        # The server saw exactly what the client sent in this run (not the warm-up): the same
        # requests and the same inputs; the batcher may have merged requests into fewer batches.
        server_view = run["server"]
        assert server_view["polyprobe_request_duration_seconds"]["count"] == 15
        assert server_view["polyprobe_inputs_per_request"]["sum"] == run["inputs"]
        assert 1 <= server_view["polyprobe_inference_duration_seconds"]["count"] <= 15
    markdown = (out / "loadtest.md").read_text("utf-8")
    assert markdown.count("req/s open-loop") >= 2
    assert "Throughput at p99 <= 5000 ms" in markdown
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
    assert run["statuses"] == {"200": 12}
    assert run["offered"] == "3 clients"
    assert run["server"]["polyprobe_request_duration_seconds"]["count"] == 12


def test_open_loop_counts_arrivals_beyond_the_outstanding_cap_as_drops(
    server: RunningServer, pairs_file: Path
) -> None:
    """Far above capacity with one request allowed in flight: every arrival is accounted for."""
    payloads = PayloadFactory(read_pairs([pairs_file]), InputsMix.parse("1"))
    shape = LoadShape("open", 0, rate=2000, max_requests=40, max_outstanding=1)
    result = asyncio.run(run_load(server.base_url, predict_path("demo"), shape, payloads))
    assert len(result.records) == 40
    dropped = [r for r in result.records if r.error == OUTSTANDING_LIMIT]
    answered = [r for r in result.records if r.status == 200]
    assert dropped
    assert answered
    assert len(dropped) + len(answered) == 40


def test_measure_reports_rejected_requests_by_status(
    server: RunningServer, pairs_file: Path
) -> None:
    """Requests over the server's per-request input limit come back 413, counted, not timed."""
    payloads = PayloadFactory(read_pairs([pairs_file]), InputsMix.parse("1:1,65:1"), seed=3)
    summary = measure(
        server.base_url, "demo", LoadShape("closed", 0, concurrency=2, max_requests=10), payloads
    )
    assert summary.requests == 10
    assert set(summary.statuses) == {"200", "413"}
    assert summary.statuses["200"] + summary.statuses["413"] == 10
    assert summary.inputs == summary.statuses["200"]
    assert not summary.all_ok


def test_remote_targets_need_an_explicit_flag(pairs_file: Path) -> None:
    result = run_cli("--url", "http://192.0.2.1:8000", "--data", str(pairs_file), "--rate", "1")
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "1", "--mix", "1:x"], "bad inputs mix"),
        (["--rate", "0"], "rate > 0"),
        (["--rate", "1", "--duration", "0"], "duration or a request count"),
        (["--concurrency", "2", "--requests", "0"], "request bound"),
    ],
)
def test_bad_arguments_get_a_clear_message(pairs_file: Path, args: list[str], message: str) -> None:
    result = run_cli("--data", str(pairs_file), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
